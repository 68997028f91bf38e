"""Behaviour of the toy policy: training really moves what it should, and only that."""

import pytest
import torch

from nudgelib.core.advantages import ESTIMATORS
from nudgelib.core.losses import AGGREGATIONS, SURROGATES
from nudgelib.toy import ToyConfig, ToyPolicy, ToyTask, train_toy

TASK = ToyTask.make({"easy": 8, "medium": 8, "hard": 8})


def test_task_difficulty_sets_initial_pass_rates():
    pr = ToyPolicy(TASK).pass_rate()
    # logit 2 vs nine zeros -> e^2/(e^2+9) = 0.451; -5 -> 0.00075
    assert pr[TASK.mask_of("easy")].mean().item() == pytest.approx(0.451, abs=1e-3)
    assert pr[TASK.mask_of("hard")].max().item() < 1e-3


def test_token_logp_sums_to_sequence_logprob_and_matches_sampling():
    pol = ToyPolicy(TASK, max_len=6)
    g = torch.Generator().manual_seed(0)
    b = pol.sample(torch.arange(24), 4, g)
    logp, mask = pol.token_logp(b.problem, b.answer, b.n_more, b.stopped)
    assert torch.allclose(logp, b.old_logp) and torch.equal(mask, b.mask)
    assert torch.all(b.length == 1 + b.n_more + b.stopped.long())
    # probabilities of all (answer, length) outcomes of one problem sum to 1
    p, K, L = 3, TASK.n_answers, pol.max_len
    total = 0.0
    for a in range(K):
        for n in range(L):
            stopped = n < L - 1
            with torch.no_grad():
                lp, m = pol.token_logp(torch.tensor([p]), torch.tensor([a]), torch.tensor([n]),
                                       torch.tensor([stopped]))
            total += torch.exp((lp * m).sum()).item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_grpo_raises_easy_pass_rate_and_hard_groups_get_no_gradient():
    pol, df = train_toy(TASK, ToyConfig(steps=40, shared_scale=0.0))
    assert df.pass_easy.iloc[-1] > df.pass_easy.iloc[0] + 0.3
    assert df.pass_medium.iloc[-1] > df.pass_medium.iloc[0] + 0.3
    # no coupling: a hard problem's table gets gradient exactly when one of its groups succeeds
    assert ((df.hard_grad_norm > 0) == (df.hard_groups_mixed > 0)).all()
    assert (df.hard_grad_norm == 0).mean() > 0.7
    assert df.pass_hard.iloc[-1] < 0.01
    # every trainable tensor changed
    fresh = ToyPolicy(TASK, shared_scale=0.0)
    assert not torch.equal(pol.bias, fresh.bias) and not torch.equal(pol.cont, fresh.cont)


def test_shared_parameters_transfer_to_hard_problems():
    _, df = train_toy(TASK, ToyConfig(steps=60, shared_scale=1.0))
    assert df.pass_hard.iloc[-1] > 0.1


@pytest.mark.parametrize("est", sorted(ESTIMATORS))
def test_every_estimator_trains(est):
    _, df = train_toy(TASK, ToyConfig(steps=15, estimator=est, shared_scale=0.0))
    assert df.pass_easy.iloc[-1] > df.pass_easy.iloc[0]


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_surrogate_and_aggregation_trains(surrogate, aggregation):
    _, df = train_toy(TASK, ToyConfig(steps=15, surrogate=surrogate, aggregation=aggregation,
                                      shared_scale=0.0, lr=0.1 if aggregation != "token_sum"
                                      else 0.02))
    assert df.pass_easy.iloc[-1] > df.pass_easy.iloc[0]


def test_config_validation():
    with pytest.raises(ValueError, match="ToyConfig.group_size must be a positive int"):
        ToyConfig(group_size=0)
    with pytest.raises(ValueError, match="unknown difficulty"):
        ToyTask.make({"impossible": 3})


def test_full_product_of_choices_runs_and_updates():
    """Every estimator x surrogate x aggregation combination trains: finite loss, weights move."""
    import itertools

    for est, sur, agg in itertools.product(sorted(ESTIMATORS), sorted(SURROGATES), AGGREGATIONS):
        pol, df = train_toy(TASK, ToyConfig(steps=2, estimator=est, surrogate=sur,
                                            aggregation=agg, prompts_per_step=8, shared_scale=0.5))
        assert df.loss.notna().all(), (est, sur, agg)
        assert pol.bias.detach().abs().sum() != ToyPolicy(TASK).bias.abs().sum(), (est, sur, agg)


def test_split_skills_give_hard_problems_their_own_feature_dimensions():
    task = ToyTask.make({"easy": 6, "medium": 4, "hard": 6}, dim=8, seed=3, skills="split")
    hard = task.mask_of("hard")
    assert torch.all(task.features[hard, :4] == 0) and torch.all(task.features[~hard, 4:] == 0)
    assert torch.all(task.features[hard, 4:] != 0) and torch.all(task.features[~hard, :4] != 0)
    with pytest.raises(ValueError, match="skills"):
        ToyTask.make(skills="disjoint")


def test_hard_spread_and_default_offsets():
    plain = ToyTask.make({"easy": 3, "hard": 50}, seed=1)
    assert plain.offset.tolist() == [2.0] * 3 + [-5.0] * 50
    spread = ToyTask.make({"easy": 3, "hard": 50}, seed=1, hard_spread=3.0)
    hard = spread.offset[3:]
    assert spread.offset[:3].tolist() == [2.0] * 3
    assert hard.min() >= -8.0 and hard.max() <= -2.0 and hard.std() > 1.0  # U(-8, -2): sd 1.73
    # the same seed gives the same problems: only the offsets differ
    assert torch.equal(plain.features, spread.features) and torch.equal(plain.answer, spread.answer)
    pol = ToyPolicy(spread)
    p = pol.pass_rate()[3:]
    expect = torch.exp(hard) / (torch.exp(hard) + 9)  # correct at offset, 9 others at 0
    assert torch.allclose(p, expect, atol=1e-6)


def test_frozen_table_learns_only_through_shared_map():
    task = ToyTask.make({"easy": 4, "hard": 4}, seed=0)
    pol = ToyPolicy(task, train_table=False)
    assert not pol.bias.requires_grad
    batch = pol.sample(torch.arange(8), 8, torch.Generator().manual_seed(0))
    logp, _ = pol.token_logp(batch.problem, batch.answer, batch.n_more, batch.stopped)
    (logp.sum()).backward()
    assert pol.bias.grad is None and pol.W.grad.abs().sum() > 0
