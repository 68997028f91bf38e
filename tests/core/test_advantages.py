"""Advantage estimators against hand-computed values (docs/method.md §4)."""

import math

import pytest
import torch

from nudgelib.core.advantages import ESTIMATORS, compute_advantages, fit_beta_moments

T = torch.tensor


def adv(rewards, groups, est, **kw):
    return compute_advantages(T(rewards, dtype=torch.float32), T(groups), est, **kw)


def test_grpo_hand_values_bessel_and_population():
    # group 0: [1,0,0,1], mean .5, Bessel var = 4 * .25 / 3 = 1/3 -> std .57735
    a = adv([1, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], "grpo")
    s = math.sqrt(1 / 3)
    want = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6)] * 1
    assert a[:4].tolist() == pytest.approx([want[0], want[1], want[1], want[0]], abs=1e-6)
    assert a[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # zero-variance group: exactly 0
    # population std = .5 and eps = 0 -> exactly +-1
    b = adv([1, 0, 0, 1], [7, 7, 7, 7], "grpo", unbiased=False, eps=0.0)
    assert b.tolist() == [1.0, -1.0, -1.0, 1.0]


def test_zero_variance_gives_exact_zero_even_with_eps_zero_and_float_noise():
    a = adv([0.1, 0.1, 0.1], [0, 0, 0], "grpo", eps=0.0)
    assert a.tolist() == [0.0, 0.0, 0.0] and not torch.isnan(a).any()
    r = T([0.3, 0.3, 0.3, 0.3], requires_grad=True)
    out = compute_advantages(r, T([0, 0, 0, 0]), "grpo", eps=0.0)
    out.sum().backward()
    assert torch.isfinite(r.grad).all()


def test_dr_grpo_rloo_batch_std_reinforce():
    assert adv([1, 0, 0, 0], [0] * 4, "dr_grpo").tolist() == pytest.approx([.75, -.25, -.25, -.25])
    # rloo: r_i - mean of the other three
    assert adv([1, 0, 0, 0], [0] * 4, "rloo").tolist() == pytest.approx([1, -1 / 3, -1 / 3, -1 / 3])
    # batch std over [1,0,1,1]: mean .75, Bessel var = (3*.0625 + .5625)/3 = .25 -> std .5
    assert adv([1, 0, 1, 1], [0, 0, 1, 1], "batch_std").tolist() == pytest.approx(
        [1, -1, 0, 0], abs=1e-5)
    assert adv([1, 0, 0, 0], [0] * 4, "reinforce_baseline").tolist() == pytest.approx(
        [.75, -.25, -.25, -.25])
    assert adv([1, 0, 0, 0], [0] * 4, "reinforce_baseline", baseline=0.5).tolist() == [
        .5, -.5, -.5, -.5]


def test_special_case_rloo_is_scaled_dr_grpo():
    """docs/method.md §4.1: rloo = G/(G-1) * (r_i - mean)."""
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 2, (40,), generator=g).float()
    ids = torch.arange(40) // 8
    assert torch.allclose(compute_advantages(r, ids, "rloo"),
                          8 / 7 * compute_advantages(r, ids, "dr_grpo"))


def test_bnpo_with_alpha_beta_one_is_reinforce_with_group_mean_baseline():
    g = torch.Generator().manual_seed(1)
    r = torch.randint(0, 2, (48,), generator=g).float()
    ids = torch.arange(48) % 6  # interleaved groups, not sorted
    a = compute_advantages(r, ids, "bnpo", alpha=1.0, beta=1.0)
    group_mean = torch.stack([r[ids == i].mean() for i in range(6)])[ids]
    assert torch.allclose(a, r - group_mean, atol=1e-6)


def test_bnpo_moment_fit_and_weights_by_hand():
    # success rates [.25, .5, .75, .5]: mu = .5, var = .03125, mu(1-mu)/var - 1 = 7
    alpha, beta = fit_beta_moments(T([0.25, 0.5, 0.75, 0.5]))
    assert alpha == pytest.approx(1 + 3.5 / 3) and beta == pytest.approx(1 + 3.5 / 3)
    rewards = [1, 0, 0, 0] + [1, 1, 0, 0] + [1, 1, 1, 0] + [1, 0, 1, 0]
    ids = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    a = adv(rewards, ids, "bnpo")

    def pdf(p):
        B = math.gamma(alpha) * math.gamma(beta) / math.gamma(alpha + beta)
        return p ** (alpha - 1) * (1 - p) ** (beta - 1) / B

    assert a[0].item() == pytest.approx(0.75 / pdf(0.25), rel=1e-5)
    assert a[4].item() == pytest.approx(0.5 / pdf(0.5), rel=1e-5)
    assert fit_beta_moments(T([0.5, 0.5])) == (1.0, 1.0)  # zero variance: degenerate fit
    with pytest.raises(ValueError, match="both alpha and beta"):
        adv(rewards, ids, "bnpo", alpha=2.0)


def test_bnpo_all_groups_solved_or_failed_is_zero_not_nan():
    # every group 0/G or G/G: degenerate fit (alpha = beta = 1) and all advantages exactly 0
    a = adv([1, 1, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3], "bnpo")
    assert a.tolist() == [0.0] * 8
    b = adv([1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 2, 2], "bnpo", alpha=3.0, beta=3.0)
    assert torch.isfinite(b).all() and b[:4].tolist() == [0.0] * 4


def test_w_reinforce_psr_nsr():
    assert adv([1, 0, 0, 1], [0] * 4, "w_reinforce").tolist() == pytest.approx([.1, -1, -1, .1])
    assert adv([1, 0], [0, 0], "w_reinforce", lam=0.5).tolist() == [0.5, -1.0]
    assert adv([1, 0, 0, 1], [0] * 4, "psr").tolist() == [1, 0, 0, 1]
    assert adv([1, 0, 0, 1], [0] * 4, "nsr").tolist() == [0, -1, -1, 0]


@pytest.mark.parametrize("est", ["grpo", "dr_grpo", "batch_std", "rloo", "bnpo"])
def test_group_of_one_is_rejected(est):
    with pytest.raises(ValueError, match=r"group 5 has 1 completion.*G = 1"):
        adv([1, 0, 1], [2, 2, 5], est)


def test_input_validation():
    with pytest.raises(ValueError, match="unknown estimator 'ppo'"):
        adv([1, 0], [0, 0], "ppo")
    with pytest.raises(ValueError, match="shape of rewards"):
        compute_advantages(T([1.0, 0.0]), T([0]))
    with pytest.raises(TypeError, match="integer tensor"):
        compute_advantages(T([1.0, 0.0]), T([0.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        adv([1, float("nan")], [0, 0], "grpo")
    with pytest.raises(TypeError, match="estimator 'grpo'"):
        adv([1, 0], [0, 0], "grpo", lam=3)


def test_every_registered_estimator_against_hand_values_on_unequal_groups():
    """Two groups of different sizes, ids interleaved: 3 completions [1, 0, 0] and 4 [1, 1, 0, 1].
    Every value below is worked out by hand from the formulas of docs/method.md §4.1."""
    r = T([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    ids = T([4, 9, 4, 9, 4, 9, 9])  # group 4: rows 0, 2, 4 = [1, 0, 0]; group 9: [1, 1, 0, 1]
    s0, s1 = math.sqrt(1 / 3), 0.5  # Bessel stds: ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3; .75 / 3 = .25
    dr = [2 / 3, 0.25, -1 / 3, 0.25, -1 / 3, -0.75, 0.25]
    sb = math.sqrt(2 / 7)  # batch: mean 4/7, (4 (3/7)^2 + 3 (4/7)^2) / 6 = 2/7
    mu, var = 13 / 24, 25 / 576  # success rates 1/3 and 3/4
    k = mu * (1 - mu) / var - 1  # = 4.72
    alpha, beta = 1 + k * mu / 3, 1 + k * (1 - mu) / 3

    def w(p):  # 1 / BetaPdf(p) = B(alpha, beta) / (p^(alpha-1) (1-p)^(beta-1)), below the clamp 10
        return math.gamma(alpha) * math.gamma(beta) / math.gamma(alpha + beta) / (
            p ** (alpha - 1) * (1 - p) ** (beta - 1))

    want = {
        "grpo": [d / ((s0 if i in (0, 2, 4) else s1) + 1e-6) for i, d in enumerate(dr)],
        "dr_grpo": dr,
        "batch_std": [d / (sb + 1e-6) for d in dr],
        "rloo": [1.0, 1 / 3, -0.5, 1 / 3, -0.5, -1.0, 1 / 3],
        "reinforce_baseline": [x - 4 / 7 for x in r.tolist()],
        "bnpo": [d * w(1 / 3 if i in (0, 2, 4) else 3 / 4) for i, d in enumerate(dr)],
        "w_reinforce": [0.1, 0.1, -1.0, 0.1, -1.0, -1.0, 0.1],
        "psr": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        "nsr": [0.0, 0.0, -1.0, 0.0, -1.0, -1.0, 0.0],
    }
    assert set(want) == set(ESTIMATORS)  # a new estimator needs its hand values here
    assert alpha == pytest.approx(1.852222, abs=1e-6) and beta == pytest.approx(1.721111, abs=1e-6)
    for name, expected in want.items():
        got = compute_advantages(r, ids, name).tolist()
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), name


def test_bnpo_refuses_shaped_rewards():
    """BNPO reads the group mean as a success rate: a format bonus (0.1) or a -1 penalty would
    silently turn it into REINFORCE with an odd weight, so it is refused with the values."""
    with pytest.raises(ValueError, match=r"bnpo needs binary rewards.*\[1\.1\] at positions \[0\]"):
        adv([1.1, 0, 1, 0], [0, 0, 1, 1], "bnpo")
    with pytest.raises(ValueError, match="binary rewards"):
        adv([1, -1, 1, 0], [0, 0, 1, 1], "bnpo")
    from nudgelib.training.config import ConfigError, get_train_config

    with pytest.raises(ConfigError, match="estimator='bnpo' with format_weight=0.1"):
        get_train_config("toy-table", estimator="bnpo", format_weight=0.1)
