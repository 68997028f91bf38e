"""policy_loss against hand-computed values and the analytic policy gradient."""

import math

import pytest
import torch

from nudgelib.core.losses import AGGREGATIONS, SURROGATES, kl_penalty, policy_loss

T = torch.tensor
# two completions: 2 tokens (third masked) and 3 tokens
LOGP = T([[-1.0, -2.0, -5.0], [-0.5, -1.0, -1.5]])
MASK = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
ADV = T([1.0, -2.0])


def loss_of(surrogate="reinforce", aggregation="token_mean", logp=LOGP, old=None, adv=ADV,
            mask=MASK, **kw):
    lp = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(lp, lp.detach() if old is None else old, adv, mask,
                              surrogate=surrogate, aggregation=aggregation, **kw)
    loss.backward()
    return loss.item(), lp.grad, stats


def test_aggregations_by_hand():
    # reinforce per-token loss -A logp: row0 [1, 2], row1 [-1, -2, -3]; masked sum = -3
    assert loss_of(aggregation="token_mean")[0] == pytest.approx(-3 / 5)
    assert loss_of(aggregation="seq_mean_token_mean")[0] == pytest.approx((3 / 2 + -6 / 3) / 2)
    assert loss_of(aggregation="token_sum")[0] == pytest.approx(-3)
    assert loss_of(aggregation="seq_mean_token_sum_norm", max_len=4)[0] == pytest.approx(-3 / 8)
    with pytest.raises(ValueError, match="needs max_len"):
        loss_of(aggregation="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        loss_of(aggregation="mean")


def test_length_bias_of_seq_mean_token_mean():
    """Per-token gradient weight: 1/|o_i| / n_seq under seq-mean, 1/total under token-mean."""
    _, g_seq, _ = loss_of(aggregation="seq_mean_token_mean")
    _, g_tok, _ = loss_of(aggregation="token_mean")
    # seq-mean: row0 tokens weigh A/(2*2), row1 tokens A/(3*2)
    assert g_seq[0, 0].item() == pytest.approx(-1 / 4) and g_seq[1, 0].item() == pytest.approx(2 / 6)
    # token-mean: every token weighs A/5
    assert g_tok[0, 0].item() == pytest.approx(-1 / 5) and g_tok[1, 0].item() == pytest.approx(2 / 5)
    assert g_seq[0, 2] == 0 and g_tok[0, 2] == 0  # masked token gets no gradient


def test_on_policy_ratio_is_one_and_ppo_gradient_equals_reinforce():
    for s in ("ppo_clip", "gspo", "cispo", "topr", "topr_token"):
        val, g, stats = loss_of(s)
        _, g_ref, _ = loss_of("reinforce")
        assert torch.allclose(g, g_ref), s
        assert stats["ratio_mean"] == pytest.approx(1.0) and stats["approx_kl"] == pytest.approx(0)
        assert stats["clip_frac_low"] == 0 and stats["clip_frac_high"] == 0
    # ppo value on-policy: -rho*A per token = [-1,-1] and [2,2,2] -> 4/5
    assert loss_of("ppo_clip")[0] == pytest.approx(4 / 5)


def one_token(ratio, a, surrogate="ppo_clip", **kw):
    logp = T([[math.log(ratio) - 1.0]])
    old = T([[-1.0]])
    return loss_of(surrogate, logp=logp, old=old, adv=T([a]), mask=T([[1.0]]), **kw)


def test_ppo_clipping_on_both_sides():
    # A > 0, rho = 1.5 > 1.2: clipped, loss -1.2 A, no gradient
    val, g, st = one_token(1.5, 1.0)
    assert val == pytest.approx(-1.2) and g.item() == 0 and st["clip_frac_high"] == 1
    # A < 0, rho = 0.5 < 0.8: clipped, loss -0.8 A = 0.8, no gradient
    val, g, st = one_token(0.5, -1.0)
    assert val == pytest.approx(0.8) and g.item() == 0 and st["clip_frac_low"] == 1
    # A < 0, rho = 1.5: unclipped (pessimistic min), loss 1.5, gradient d(-rho A)/dlogp = 1.5
    val, g, st = one_token(1.5, -1.0)
    assert val == pytest.approx(1.5) and g.item() == pytest.approx(1.5)
    assert st["clip_frac_low"] == 0 and st["clip_frac_high"] == 0
    # A > 0, rho = 0.5: unclipped, loss -0.5, gradient -0.5
    val, g, _ = one_token(0.5, 1.0)
    assert val == pytest.approx(-0.5) and g.item() == pytest.approx(-0.5)


def test_clip_higher():
    assert one_token(1.25, 1.0, eps_high=0.2)[1].item() == 0  # clipped at 1.2
    val, g, _ = one_token(1.25, 1.0, eps_low=0.2, eps_high=0.28)  # DAPO: room up to 1.28
    assert val == pytest.approx(-1.25) and g.item() == pytest.approx(-1.25)


# Three completions of different lengths and ratios (token_sum isolates the surrogate):
#   row 0: 2 tokens, token ratios [2, 0.5] (their product and geometric mean are both 1), A = -1
#   row 1: 3 tokens, log-ratios [0.3, 0.1, -0.1] (mean 0.1, sum 0.3), A = +2
#   row 2: 1 token,  log-ratio 0.25 (ratio 1.284 > 1.2), A = +1
SEQ_LOG_R = T([[math.log(2.0), math.log(0.5), 0.0], [0.3, 0.1, -0.1], [0.25, 0.0, 0.0]])
SEQ_MASK = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
SEQ_OLD = T([[-1.0, -2.0, -1.0], [-0.5, -1.5, -2.0], [-1.2, -1.0, -1.0]])


def seq_grad(surrogate, adv=(-1.0, 2.0, 1.0), aggregation="token_sum", log_r=SEQ_LOG_R):
    _, g, st = loss_of(surrogate, aggregation, logp=SEQ_OLD + log_r * SEQ_MASK, old=SEQ_OLD,
                       adv=T(adv), mask=SEQ_MASK)
    return g, st


def test_gspo_one_clipped_ratio_per_sequence_by_hand():
    g, st = seq_grad("gspo")
    # every token of row i carries the sequence loss -rho_i A_i (rho = exp(mean log-ratio));
    # d(-rho A)/d logp_t = -A rho / |o|, summed over the |o| copies under token_sum: -A rho
    assert g[0, :2].tolist() == pytest.approx([1.0, 1.0])  # rho = 1, A = -1
    assert g[1].tolist() == pytest.approx([-2 * math.exp(0.1)] * 3)  # rho = 1.105
    assert g[2, 0].item() == 0  # rho = exp(0.25) = 1.284 > 1.2 with A > 0: clipped
    assert g[0, 2] == 0 and g[2, 1:].abs().sum() == 0  # masked tokens
    # the token-level PPO ratio tells them apart: row 0's tokens get 2 (rho = 2, A < 0,
    # unclipped by the pessimistic min) and 0 (rho = 0.5 < 0.8, clipped)
    g_ppo, _ = seq_grad("ppo_clip")
    assert g_ppo[0, :2].tolist() == pytest.approx([2.0, 0.0])
    # per-sequence mean (GSPO's definition, mean_i of -rho_i A_i): -A rho / |o_i| / 3 rows
    g_seq, _ = seq_grad("gspo", aggregation="seq_mean_token_mean")
    assert g_seq[0, :2].tolist() == pytest.approx([1 / 2 / 3] * 2)
    assert g_seq[1].tolist() == pytest.approx([-2 * math.exp(0.1) / 3 / 3] * 3)
    # token_mean weighs row i by |o_i| / 6 tokens instead: a length-weighted objective
    g_tok, _ = seq_grad("gspo", aggregation="token_mean")
    assert g_tok[1, 0].item() == pytest.approx(-2 * math.exp(0.1) / 6)


def test_gspo_with_a_token_weighted_aggregation_is_refused_by_the_config():
    from nudgelib.training.config import ConfigError, get_train_config

    with pytest.raises(ConfigError, match=r"surrogate='gspo' with aggregation='token_mean'.*"
                                          r"aggregation='seq_mean_token_mean'"):
        get_train_config("toy-table", surrogate="gspo", aggregation="token_mean")
    assert get_train_config("toy-table", surrogate="gspo",
                            aggregation="seq_mean_token_mean").surrogate == "gspo"


def test_cispo_keeps_gradient_when_clipped():
    g, _ = seq_grad("cispo")
    # -stopgrad(clip(rho, 0.8, 1.2)) A per token
    assert g[0, :2].tolist() == pytest.approx([1.2, 0.8])
    assert g[1].tolist() == pytest.approx([-2 * 1.2, -2 * math.exp(0.1), -2 * math.exp(-0.1)])
    assert g[2, 0].item() == pytest.approx(-1.2)  # clipped, still learns (PPO would give 0)
    val, g1, _ = one_token(1.5, 1.0, surrogate="cispo")
    assert val == pytest.approx(-1.2 * (math.log(1.5) - 1.0))


def test_topr_truncates_the_trajectory_ratio_not_each_token():
    """The acceptance case: a negative sequence with token ratios [2, 0.5] has trajectory ratio
    1, so both tokens get the same weight 1; the per-token form gives 1 and 0.5."""
    g, st = seq_grad("topr")
    assert g[0, :2].tolist() == pytest.approx([1.0, 1.0])
    assert g[1].tolist() == pytest.approx([-2.0] * 3)  # A > 0: plain -A logp, no ratio
    assert g[2, 0].item() == pytest.approx(-1.0)
    g_tok, _ = seq_grad("topr_token")
    assert g_tok[0, :2].tolist() == pytest.approx([1.0, 0.5])
    # negative rows with trajectory ratios 0.4 (= 0.5 * 0.8) and exp(0.3) > 1 (clamped to 1)
    log_r = T([[math.log(0.5), math.log(0.8), 0.0], [0.3, 0.1, -0.1], [0.25, 0.0, 0.0]])
    g, _ = seq_grad("topr", adv=(-1.0, -2.0, 1.0), log_r=log_r)
    assert g[0, :2].tolist() == pytest.approx([0.4, 0.4])
    assert g[1].tolist() == pytest.approx([2.0, 2.0, 2.0])
    g_tok, _ = seq_grad("topr_token", adv=(-1.0, -2.0, 1.0), log_r=log_r)
    assert g_tok[0, :2].tolist() == pytest.approx([0.5, 0.8])
    assert g_tok[1].tolist() == pytest.approx([2.0, 2.0, 2 * math.exp(-0.1)])


def test_kl_estimators_by_hand():
    lp, ref = T([-1.0]), T([-1.5])  # d = 0.5
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_penalty(lp, ref, "k4")
    # in the loss: beta * k added per token; reinforce one token, A = 0 -> loss = beta * k3
    val, _, st = loss_of(logp=T([[-1.0]]), adv=T([0.0]), mask=T([[1.0]]),
                         ref_logp=T([[-1.5]]), kl="k3", beta=0.1)
    assert val == pytest.approx(0.1 * (math.exp(-0.5) - 0.5))
    assert st["kl_ref"] == pytest.approx(math.exp(-0.5) - 0.5)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_fully_masked_and_empty_batches_give_zero_not_nan(surrogate, aggregation):
    val, g, _ = loss_of(surrogate, aggregation, mask=torch.zeros_like(MASK), max_len=4)
    assert val == 0.0 and torch.all(g == 0)
    empty = torch.zeros(0, 3)
    val, g, _ = loss_of(surrogate, aggregation, logp=empty, adv=torch.zeros(0), mask=empty,
                        max_len=4)
    assert val == 0.0 and g.shape == (0, 3)


def test_zero_advantages_give_zero_gradient():
    for s in SURROGATES:
        _, g, _ = loss_of(s, adv=torch.zeros(2))
        assert torch.all(g == 0) and not torch.isnan(g).any(), s


def test_shape_and_option_errors():
    with pytest.raises(ValueError, match=r"advantages must be \[B\]"):
        policy_loss(LOGP, LOGP, T([1.0]), MASK)
    with pytest.raises(ValueError, match="mask must have the shape"):
        policy_loss(LOGP, LOGP, ADV, MASK[:, :2])
    with pytest.raises(ValueError, match="unknown surrogate 'ppo'"):
        policy_loss(LOGP, LOGP, ADV, MASK, surrogate="ppo")
    with pytest.raises(ValueError, match="needs both kl"):
        policy_loss(LOGP, LOGP, ADV, MASK, beta=0.1, kl="k3")


def test_autograd_matches_analytic_policy_gradient():
    """Tiny softmax policy pi(y | x) = softmax(W x): grad log pi = (e_y - pi) x^T."""
    g = torch.Generator().manual_seed(0)
    V, D, B, Tn = 7, 5, 4, 6
    W = torch.randn(V, D, generator=g, requires_grad=True)
    x = torch.randn(B, Tn, D, generator=g)  # a context vector per position
    with torch.no_grad():
        probs = torch.softmax(x @ W.T, -1)
        y = torch.multinomial(probs.reshape(-1, V), 1, generator=g).reshape(B, Tn)
    mask = (torch.arange(Tn) < T([6, 3, 1, 4]).unsqueeze(1)).float()
    adv = T([1.0, -0.5, 2.0, -1.0])
    logp = torch.log_softmax(x @ W.T, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, surrogate="reinforce",
                          aggregation="token_sum")
    (auto,) = torch.autograd.grad(loss, W)
    analytic = torch.zeros(V, D)
    for b in range(B):
        for t in range(Tn):
            if mask[b, t]:
                e = torch.zeros(V)
                e[y[b, t]] = 1
                analytic -= adv[b] * torch.outer(e - probs[b, t], x[b, t])
    assert torch.allclose(auto, analytic, atol=1e-5)


def test_kl_gradients_against_their_closed_forms():
    """As loss terms differentiated through samples of pi (the sampled tokens fixed), the
    expected gradient E_{x~pi}[grad k(x)] of each estimator, computed exactly over a
    5-token vocabulary, against closed forms worked out by hand for a softmax policy
    pi = softmax(theta):
      grad KL(pi || ref) = pi * (log pi - log ref - KL)      (what k2 gives)
      k1: E[grad log pi] = 0
      k3: E[(1 - ref/pi) grad log pi] = pi - ref = grad KL(ref || pi)   (biased)"""
    theta = T([0.3, -1.0, 0.8, 0.0, -0.4], requires_grad=True)
    ref = torch.log_softmax(T([0.0, 0.5, -0.5, 1.0, 0.2]), -1)
    logp = torch.log_softmax(theta, -1)
    pi = logp.exp().detach()
    kl = float((pi * (logp.detach() - ref)).sum())
    closed = {"k1": torch.zeros(5), "k2": pi * (logp.detach() - ref - kl),
              "k3": pi - ref.exp()}
    for kind, want in closed.items():
        (g,) = torch.autograd.grad((pi * kl_penalty(logp, ref, kind)).sum(), theta,
                                   retain_graph=True)
        assert torch.allclose(g, want, atol=1e-6), kind
    assert not torch.allclose(closed["k3"], closed["k2"], atol=1e-2)  # the bias is not small
    # the values, by contrast, all average to KL(pi || ref) (k1 and k3 exactly)
    for kind in ("k1", "k3"):
        assert float((pi * kl_penalty(logp, ref, kind)).sum()) == pytest.approx(kl, abs=1e-6)
