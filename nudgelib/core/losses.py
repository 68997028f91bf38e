"""Policy-gradient losses of the GRPO family: surrogate x KL x aggregation (docs/method.md §4).

    loss, stats = policy_loss(logp, old_logp, advantages, mask,
                              surrogate="ppo_clip", aggregation="token_mean")

``logp``, ``old_logp``, ``mask`` are [B, T] (per-token log-probs of the sampled completions
under the current and the sampling policy; mask 1 on completion tokens); ``advantages`` is
[B], one per completion, broadcast over its tokens. rho = exp(logp - old_logp).

Per-token surrogates (``SURROGATES``):

* ``reinforce``: -A logp (no ratio);
* ``ppo_clip``: -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A); eps_high > eps_low is
  DAPO's clip-higher (arXiv 2503.14476);
* ``gspo``: the same with one sequence-level ratio exp(mean_t(logp - old_logp)) per completion
  (arXiv 2507.18071). GSPO is defined with the per-sequence mean ``seq_mean_token_mean``; under
  a token-weighted aggregation it is a different, length-weighted objective, which
  :class:`nudgelib.training.config.TrainConfig` refuses (this function computes any combination);
* ``cispo``: -stopgrad(clip(rho, 1 - eps_low, 1 + eps_high)) A logp (MiniMax-M1, arXiv 2506.13585);
* ``topr``: A > 0: -A logp; A <= 0: -stopgrad(clamp(R, 0, 1)) A logp with R =
  exp(sum_t m (logp - old_logp)) the TRAJECTORY ratio, one weight per completion
  (arXiv 2503.14286);
* ``topr_token``: the same truncation applied to each token's own ratio rho instead (not the
  paper's method; kept under its own name for comparison).

KL to a reference (``kl`` with ``ref_logp`` and weight ``beta``), per token, with
d = logp - ref_logp: k1 = d, k2 = d^2 / 2, k3 = exp(-d) + d - 1 (always >= 0). As values all
three estimate KL(pi || ref) (k1 and k3 without bias). As loss terms differentiated through
samples of pi they do not have the same gradient: only k2's expected gradient equals the
gradient of KL(pi || ref); k1's is zero in expectation and k3's is biased (its expectation is
the gradient of KL(ref || pi)). ``tests/core/test_losses.py`` checks all three against the closed
forms.

Aggregations (``AGGREGATIONS``), l = per-token loss, m = mask, |o_i| = sum_t m_it:

* ``seq_mean_token_mean`` (original GRPO): mean over completions with |o_i| > 0 of
  sum_t m l / |o_i|. Length-biased: each token of a long completion weighs less.
* ``token_mean`` (DAPO): sum m l / sum m.
* ``seq_mean_token_sum_norm`` (Dr. GRPO): sum m l / (B * max_len), max_len a constant.
* ``token_sum``: sum m l.

Empty or fully masked batches give a loss of exactly 0 with zero (not NaN) gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["AGGREGATIONS", "KL_ESTIMATORS", "SURROGATES", "aggregate", "kl_penalty",
           "microbatch_scale", "policy_loss"]


def _clip(rho: Tensor, eps_low: float, eps_high: float) -> Tensor:
    return rho.clamp(1.0 - eps_low, 1.0 + eps_high)


def _reinforce(logp, old_logp, adv, mask, eps_low, eps_high):
    return -adv * logp, torch.ones_like(logp)


def _ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high):
    rho = torch.exp(logp - old_logp)
    return -torch.min(rho * adv, _clip(rho, eps_low, eps_high) * adv), rho


def _gspo(logp, old_logp, adv, mask, eps_low, eps_high):
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    seq_log_ratio = ((logp - old_logp) * mask).sum(-1, keepdim=True) / n
    rho = torch.exp(seq_log_ratio).expand_as(logp)
    return -torch.min(rho * adv, _clip(rho, eps_low, eps_high) * adv), rho


def _cispo(logp, old_logp, adv, mask, eps_low, eps_high):
    rho = torch.exp(logp - old_logp)
    return -_clip(rho, eps_low, eps_high).detach() * adv * logp, rho


def _topr(logp, old_logp, adv, mask, eps_low, eps_high):
    log_r = ((logp - old_logp) * mask).sum(-1, keepdim=True)  # log of the trajectory ratio
    rho = torch.exp(log_r.clamp(max=0.0)).detach().expand_as(logp)  # clamp(R, 0, 1)
    ratio = torch.exp(log_r.clamp(max=50.0)).expand_as(logp)  # for the stats; no overflow
    return torch.where(adv > 0, -adv * logp, -rho * adv * logp), ratio


def _topr_token(logp, old_logp, adv, mask, eps_low, eps_high):
    rho = torch.exp(logp - old_logp)
    neg_w = rho.clamp(0.0, 1.0).detach()
    return torch.where(adv > 0, -adv * logp, -neg_w * adv * logp), rho


SURROGATES: dict[str, Callable] = {
    "reinforce": _reinforce,
    "ppo_clip": _ppo_clip,
    "gspo": _gspo,
    "cispo": _cispo,
    "topr": _topr,
    "topr_token": _topr_token,
}


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    """Per-token KL estimate of the current policy to the reference (k1, k2 or k3)."""
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(-d) + d - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_ESTIMATORS}")


KL_ESTIMATORS = ("k1", "k2", "k3")


def aggregate(per_token: Tensor, mask: Tensor, aggregation: str,
              max_len: int | None = None) -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar (see the module docstring)."""
    m = mask.to(per_token.dtype)
    masked = per_token * m
    if aggregation == "token_mean":
        return masked.sum() / m.sum().clamp(min=1.0)
    if aggregation == "seq_mean_token_mean":
        lens = m.sum(-1)
        per_seq = masked.sum(-1) / lens.clamp(min=1.0)
        return per_seq.sum() / (lens > 0).sum().clamp(min=1).to(per_token.dtype)
    if aggregation == "seq_mean_token_sum_norm":
        if max_len is None or max_len <= 0:
            raise ValueError("aggregation 'seq_mean_token_sum_norm' needs max_len (a positive "
                             "constant, e.g. the generation budget), got "
                             f"max_len={max_len!r}")
        return masked.sum() / (max(per_token.shape[0], 1) * max_len)
    if aggregation == "token_sum":
        return masked.sum()
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm", "token_sum")


def microbatch_scale(aggregation: str, micro_mask: Tensor, full_mask: Tensor) -> float:
    """Weight w of a micro-batch so that sum_micro w * aggregate(micro) == aggregate(full).

    Gradient accumulation over micro-batches must not change the loss: token_mean divides by
    the tokens of the whole batch, seq_mean_* by its number of (non-empty) completions.
    """
    if aggregation == "token_mean":
        return float(micro_mask.sum()) / max(float(full_mask.sum()), 1.0)
    if aggregation == "seq_mean_token_mean":
        return float((micro_mask.sum(-1) > 0).sum()) / max(float((full_mask.sum(-1) > 0).sum()), 1.0)
    if aggregation == "seq_mean_token_sum_norm":
        return micro_mask.shape[0] / max(full_mask.shape[0], 1)
    if aggregation == "token_sum":
        return 1.0
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                surrogate: str = "ppo_clip", aggregation: str = "token_mean",
                eps_low: float = 0.2, eps_high: float = 0.2, ref_logp: Tensor | None = None,
                kl: str | None = None, beta: float = 0.0,
                max_len: int | None = None) -> tuple[Tensor, dict]:
    """Scalar loss and stats (clip fractions low/high, approx KL old->new, mean ratio, KL to ref)."""
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(f"{name} must have the shape of logp {tuple(logp.shape)}, "
                             f"got {tuple(t.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logp.shape[0]}], got "
                         f"{tuple(advantages.shape)}")
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}")
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, "
                         f"eps_high={eps_high}")
    if (kl is None) != (ref_logp is None) and beta != 0:
        raise ValueError("a KL penalty needs both kl=('k1'|'k2'|'k3') and ref_logp")
    m = mask.to(logp.dtype)
    old_logp = old_logp.detach()
    adv = advantages.to(logp.dtype).unsqueeze(-1).expand_as(logp)
    per_token, rho = SURROGATES[surrogate](logp, old_logp, adv, m, eps_low, eps_high)
    stats: dict[str, float] = {}
    if kl is not None and ref_logp is not None:
        k = kl_penalty(logp, ref_logp.detach(), kl)
        stats["kl_ref"] = float((k.detach() * m).sum() / m.sum().clamp(min=1))
        if beta:
            per_token = per_token + beta * k
    loss = aggregate(per_token, m, aggregation, max_len)

    with torch.no_grad():
        n = m.sum().clamp(min=1)
        r = rho.detach()
        low = (r < 1 - eps_low) & (adv < 0)
        high = (r > 1 + eps_high) & (adv > 0)
        stats["clip_frac_low"] = float((low * m).sum() / n)
        stats["clip_frac_high"] = float((high * m).sum() / n)
        stats["ratio_mean"] = float((r * m).sum() / n)
        log_r = (logp - old_logp).detach()
        stats["approx_kl"] = float(((torch.exp(log_r) - 1 - log_r) * m).sum() / n)
        stats["n_tokens"] = float(m.sum())
    return loss, stats
