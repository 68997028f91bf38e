"""Advantage estimators of the GRPO family (docs/method.md §4), as registered pure functions.

Every estimator maps the rewards of a batch, grouped by prompt, to one advantage per
completion::

    compute_advantages(rewards, group_ids, estimator="grpo", **options) -> Tensor [N]

``rewards`` is float [N]; ``group_ids`` is long [N] (completions of the same prompt share an
id; ids need not be contiguous or sorted). ``ESTIMATORS`` maps each name to its function so a
notebook can loop over them. Estimators that compare a completion with its group reject groups
of size 1: such a group has no baseline.

=====================  =============================================================
name                   formula (r = rewards of one group of size G)
=====================  =============================================================
grpo                   (r - mean) / (std + eps); Bessel std by default (``unbiased``),
                       eps = 1e-6; a zero-variance group gives exactly 0 (DeepSeekMath,
                       arXiv 2402.03300)
dr_grpo                r - mean (Dr. GRPO, arXiv 2503.20783)
batch_std              (r - group mean) / (std of the whole batch + eps)
rloo                   r_i - mean of the other G - 1 = G / (G - 1) * (r_i - mean)
                       (arXiv 2402.14740)
reinforce_baseline     r - b, b = ``baseline`` (a number) or the batch mean
bnpo                   (r - p) * w(p), w = 1 / BetaPdf(p; alpha, beta) clamped to
                       ``max_weight``; p = group success rate; alpha, beta fitted by moments
                       from the batch's success rates, or fixed (arXiv 2506.02864); binary
                       0/1 rewards only (shaped rewards are refused: p would not be a rate)
w_reinforce            +lambda if correct (lambda = 0.1), -1 if wrong (arXiv 2506.01347)
psr / nsr              +1 for correct only / -1 for wrong only (same paper)
=====================  =============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ESTIMATORS", "GroupStats", "compute_advantages", "group_stats", "fit_beta_moments"]


@dataclass(frozen=True)
class GroupStats:
    """Per-completion views of per-group statistics (each a tensor [N])."""

    rewards: Tensor  # the validated rewards, float [N]
    index: Tensor  # group index 0..n_groups-1 of each completion
    size: Tensor  # size of its group
    mean: Tensor  # mean reward of its group
    std: Tensor  # std of its group (Bessel or population, as asked)
    n_groups: int
    group_mean: Tensor  # [n_groups] mean reward of each group (its success rate for 0/1 rewards)


def _check_inputs(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(rewards, Tensor):
        rewards = torch.as_tensor(rewards)
    if not isinstance(group_ids, Tensor):
        group_ids = torch.as_tensor(group_ids)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor [N], got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids must have the shape of rewards {tuple(rewards.shape)}, "
                         f"got {tuple(group_ids.shape)}")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if rewards.numel() == 0:
        raise ValueError("rewards is empty: need at least one group")
    rewards = rewards.to(torch.float32) if not rewards.dtype.is_floating_point else rewards
    if not torch.isfinite(rewards).all():
        bad = (~torch.isfinite(rewards)).nonzero().flatten()[:5].tolist()
        raise ValueError(f"rewards must be finite; non-finite at positions {bad}")
    return rewards, group_ids.long()


def group_stats(rewards: Tensor, group_ids: Tensor, *, unbiased: bool = True,
                min_size: int = 1) -> GroupStats:
    """Mean and std of each completion's group, by scatter-add (no Python loop over groups)."""
    rewards, group_ids = _check_inputs(rewards, group_ids)
    uniq, index = torch.unique(group_ids, return_inverse=True)
    n_groups = uniq.numel()
    counts = torch.bincount(index, minlength=n_groups).to(rewards.dtype)
    if min_size > 1 and bool((counts < min_size).any()):
        g = uniq[(counts < min_size).nonzero()[0, 0]].item()
        raise ValueError(f"group {g} has {int(counts[uniq == g].item())} completion(s); this "
                         f"estimator needs groups of size >= {min_size} (G = 1 has no baseline)")
    sums = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, index, rewards)
    mean = sums / counts
    dev = rewards - mean[index]
    sq = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, index, dev * dev)
    denom = (counts - 1).clamp(min=1) if unbiased else counts
    var = sq / denom
    # Zero-variance groups (all rewards equal) get an exact 0 std: a float mean may differ from
    # the values by an ulp, and sqrt'(0) = inf would make the gradient NaN.
    r = rewards.detach()
    gmax = torch.full((n_groups,), -math.inf, dtype=r.dtype).scatter_reduce_(0, index, r, "amax")
    gmin = torch.full((n_groups,), math.inf, dtype=r.dtype).scatter_reduce_(0, index, r, "amin")
    spread = gmax > gmin
    std = torch.where(spread, torch.where(spread, var, torch.ones_like(var)).sqrt(),
                      torch.zeros_like(var))
    return GroupStats(rewards=rewards, index=index, size=counts[index], mean=mean[index], std=std[index],
                      n_groups=n_groups, group_mean=mean)


def _centered(st: GroupStats) -> Tensor:
    """r - group mean, exactly 0 inside zero-variance groups."""
    return torch.where(st.std > 0, st.rewards - st.mean, torch.zeros_like(st.rewards))


def grpo(rewards, group_ids, *, eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    st = group_stats(rewards, group_ids, unbiased=unbiased, min_size=2)
    safe = torch.where(st.std > 0, st.std, torch.ones_like(st.std))
    return _centered(st) / (safe + eps)


def dr_grpo(rewards, group_ids) -> Tensor:
    return _centered(group_stats(rewards, group_ids, min_size=2))


def batch_std(rewards, group_ids, *, eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    st = group_stats(rewards, group_ids, min_size=2)
    std = st.rewards.std(unbiased=unbiased)  # groups of >= 2 imply N >= 2
    if std == 0:
        return torch.zeros_like(st.rewards)
    return _centered(st) / (std + eps)


def rloo(rewards, group_ids) -> Tensor:
    st = group_stats(rewards, group_ids, min_size=2)
    return _centered(st) * st.size / (st.size - 1)


def reinforce_baseline(rewards, group_ids, *, baseline: float | None = None) -> Tensor:
    rewards, _ = _check_inputs(rewards, group_ids)
    b = rewards.mean() if baseline is None else torch.as_tensor(float(baseline))
    return rewards - b


def fit_beta_moments(p: Tensor) -> tuple[float, float]:
    """BNPO's alpha, beta from success rates p by moments (docs/method.md §4).

    a = (mu(1-mu)/var - 1) mu, b = (mu(1-mu)/var - 1)(1-mu); alpha = max(1 + a/3, 1),
    beta = max(1 + b/3, 1). Degenerate batches (var = 0, mu in {0, 1}) give alpha = beta = 1.
    """
    mu = float(p.mean())
    var = float(p.var(unbiased=False)) if p.numel() > 1 else 0.0
    if var <= 0 or mu <= 0 or mu >= 1:
        return 1.0, 1.0
    k = mu * (1 - mu) / var - 1
    return max(1 + k * mu / 3, 1.0), max(1 + k * (1 - mu) / 3, 1.0)


def _beta_pdf(p: Tensor, alpha: float, beta: float) -> Tensor:
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    # float64 and a 1e-6 clamp: in float32 1 - 1e-12 rounds to 1 and 0 * log(0) is NaN
    p = p.double().clamp(1e-6, 1 - 1e-6)
    return torch.exp((alpha - 1) * torch.log(p) + (beta - 1) * torch.log1p(-p) - log_b)


def bnpo(rewards, group_ids, *, alpha: float | None = None, beta: float | None = None,
         max_weight: float = 10.0) -> Tensor:
    st = group_stats(rewards, group_ids, min_size=2)
    binary = (st.rewards == 0) | (st.rewards == 1)
    if not bool(binary.all()):
        bad = (~binary).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"bnpo needs binary rewards in {{0, 1}}: the group mean is read as a success rate "
            f"p and weighted by 1 / BetaPdf(p); got non-binary values "
            f"{[round(float(st.rewards[i]), 4) for i in bad]} at positions {bad}. Use a "
            f"0/1 correctness reward (no format or length shaping) or another estimator")
    if (alpha is None) != (beta is None):
        raise ValueError("bnpo: give both alpha and beta, or neither (fitted from the batch)")
    if alpha is None:
        alpha, beta = fit_beta_moments(st.group_mean)
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"bnpo: alpha and beta must be > 0, got alpha={alpha}, beta={beta}")
    weight = (1.0 / _beta_pdf(st.mean, alpha, beta)).clamp(max=max_weight).to(st.rewards.dtype)
    return _centered(st) * torch.where(st.std > 0, weight, torch.zeros_like(weight))


def _correct(rewards: Tensor, threshold: float) -> Tensor:
    return rewards > threshold


def w_reinforce(rewards, group_ids, *, lam: float = 0.1, threshold: float = 0.5) -> Tensor:
    rewards, _ = _check_inputs(rewards, group_ids)
    c = _correct(rewards, threshold)
    return torch.where(c, torch.full_like(rewards, lam), torch.full_like(rewards, -1.0))


def psr(rewards, group_ids, *, threshold: float = 0.5) -> Tensor:
    rewards, _ = _check_inputs(rewards, group_ids)
    return _correct(rewards, threshold).to(rewards.dtype)


def nsr(rewards, group_ids, *, threshold: float = 0.5) -> Tensor:
    rewards, _ = _check_inputs(rewards, group_ids)
    return -(~_correct(rewards, threshold)).to(rewards.dtype)


ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "batch_std": batch_std,
    "rloo": rloo,
    "reinforce_baseline": reinforce_baseline,
    "bnpo": bnpo,
    "w_reinforce": w_reinforce,
    "psr": psr,
    "nsr": nsr,
}


def compute_advantages(rewards, group_ids, estimator: str = "grpo", **options) -> Tensor:
    """Advantages [N] for ``rewards`` [N] grouped by ``group_ids`` [N] (see module table)."""
    try:
        fn = ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of "
                         f"{sorted(ESTIMATORS)}") from None
    try:
        return fn(rewards, group_ids, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"estimator {estimator!r}: {err}") from None
        raise


def nudgerl_advantages(rewards: Tensor, group_ids: Tensor, context: Tensor, *,
                       lam: float = 1.1, eps: float = 1e-5, unbiased: bool = False) -> Tensor:
    """NudgeRL's inter/intra-context advantage (arXiv 2605.15726; docs/method.md §3).

    Per problem (group), with m = mean reward of all its rollouts and m_c = mean reward of the
    rollouts that kept context c (``context`` = c >= 0; -1 = no context):

        a_i = (r_i - m_c) + lam * (m_c - m)     for a rollout under context c
        a_i = r_i - m                            for a rollout without context

    then standardised per problem: (a - mean(a)) / (std(a) + eps), with the population std and
    eps 1e-5 as NudgeRL's reference code normalises (``unbiased=True`` for Bessel's std, the
    reading of the paper's text alone); a problem whose a are all equal gets 0.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    context = torch.as_tensor(context, dtype=torch.long)
    st = group_stats(rewards, group_ids)
    a = rewards - st.mean
    has_ctx = context >= 0
    if has_ctx.any():
        n_ctx = int(context.max()) + 1
        key = st.index * n_ctx + context.clamp(min=0)
        sums = torch.zeros(st.n_groups * n_ctx).index_add_(0, key[has_ctx], rewards[has_ctx])
        cnts = torch.zeros(st.n_groups * n_ctx).index_add_(0, key[has_ctx],
                                                             torch.ones(int(has_ctx.sum())))
        m_c = (sums / cnts.clamp(min=1))[key]
        a = torch.where(has_ctx, (rewards - m_c) + lam * (m_c - st.mean), a)
    sa = group_stats(a, group_ids, unbiased=unbiased)
    return torch.where(sa.std > 0, (a - sa.mean) / (sa.std + eps), torch.zeros_like(a))
