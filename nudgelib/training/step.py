"""One GRPO / NuRL training step, top to bottom: the page to read first.

    sample -> hint-free metrics -> nudge -> advantages -> micro-batched loss -> optimizer step

The :class:`~nudgelib.training.trainer.Trainer` calls :func:`train_step` once per step and
keeps everything around it (data order, validation, the stage switch, checkpoints). A nudging
strategy (:class:`nudgelib.nudging.Nudger`, e.g. NuRL) is visited at its declared hooks only:
``sample`` (may draw the batch itself), ``nudge`` (NuRL: 0/G groups keep one failure and get
G-1 hinted rows), ``advantages`` (when it ``sets_advantages``: NudgeRL) and
``auxiliary_loss``. Nothing here writes to the strategy or reads its internals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from nudgelib.core.advantages import compute_advantages
from nudgelib.core.losses import microbatch_scale, policy_loss
from nudgelib.nudging import Nudger, SamplingContext
from nudgelib.rollouts import RolloutBatch, micro_batches, nudge_metrics, trim_padding
from nudgelib.tasks.arithmetic import answer_shape_shares
from nudgelib.training.config import TrainConfig


@dataclass
class StepResult:
    """What one step produced: the batch it trained on, its advantages, the hint-free metrics
    taken before nudging, what the nudge produced (hinted successes, their hint reliance), the
    loss statistics, the rows a strategy sampled again, timings."""

    batch: RolloutBatch
    advantages: Tensor
    plain: dict
    nudged: dict
    loss: dict
    rows_resampled: int
    seconds: dict
    cost: dict  # the step's compute ledger: LEDGER_KEYS and tokens_trained


def train_step(policy, optimizer, scheduler, cfg: TrainConfig, problems, ctx: SamplingContext,
               nudger: Nudger | None = None) -> StepResult:
    """One step on ``problems``; ``nudger`` None: plain GRPO (stage 1 or no strategy)."""
    t0 = time.time()
    booked = dict(ctx.ledger)
    # 1. sample G completions per problem (a strategy may draw the whole batch itself)
    batch = nudger.sample(problems, ctx) if nudger is not None else None
    if batch is None:
        batch = ctx.collect(problems)
    # 2. what the policy does unaided, before any hint is shown
    plain = plain_metrics(batch)
    t1 = time.time()
    # 3. nudge: NuRL's 0/G groups keep one failure and get G-1 rows sampled with the hint
    before = ctx.rows_sampled
    if nudger is not None:
        batch = nudger.nudge(batch, ctx)
    nudged = nudge_metrics(policy, batch, temperature=cfg.temperature) if nudger else {}
    t2 = time.time()
    # 4. advantages over each (possibly mixed hinted / hint-free) group
    if nudger is not None and nudger.sets_advantages:
        adv = nudger.advantages(batch)
    else:
        adv = compute_advantages(batch.rewards, batch.group, cfg.estimator,
                                 **cfg.estimator_options)
    batch.advantages = adv  # kept on the batch for the views (dashboard, callbacks)
    # 5-6. the policy loss over micro-batches, then one optimizer step
    loss = update(policy, optimizer, scheduler, cfg, batch, adv, nudger)
    cost = {k: v - booked.get(k, 0) for k, v in ctx.ledger.items()}
    cost["tokens_trained"] = loss.pop("tokens_trained")
    return StepResult(batch, adv, plain, nudged, loss, ctx.rows_sampled - before,
                      {"sample": t1 - t0, "resample": t2 - t1, "train": time.time() - t2}, cost)


def plain_metrics(batch: RolloutBatch) -> dict:
    """pass_rate (and per level) and learnable_ratio over the hint-free rollouts."""
    plain = ~batch.hinted
    if not plain.any():
        return {"pass_rate": None, "learnable_ratio": None}
    group, correct = batch.group[plain], batch.correct[plain].float()
    passes = torch.zeros(batch.n_groups).index_add_(0, group, correct)
    seen = torch.bincount(group, minlength=batch.n_groups) > 0
    out = {"pass_rate": float(correct.mean()),
           "learnable_ratio": float((passes[seen] > 0).float().mean())}
    levels = [batch.problems[g].level for g in group.tolist()]
    for lv in sorted({lv for lv in levels if lv is not None}):
        sel = torch.tensor([x == lv for x in levels])
        out[f"pass_rate_L{lv}"] = float(correct[sel].mean())
    out.update(answer_shape_shares(t for t, p in zip(batch.texts, plain.tolist()) if p))
    return out


def update(policy, optimizer, scheduler, cfg: TrainConfig, batch: RolloutBatch, adv: Tensor,
           nudger: Nudger | None = None) -> dict:
    """``ppo_epochs`` passes of the clipped policy loss over micro-batches of the rows with a
    non-zero advantage (exact with ``kl_beta == 0``: the others add 0), gradient clipping and
    one optimizer step each; one scheduler step. Returns the loss statistics."""
    rows = torch.arange(len(batch))
    if cfg.skip_zero_advantage and cfg.kl_beta == 0:
        rows = rows[adv != 0]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums: dict[str, float] = {"_w": 0.0}
    total_loss, aux_sum, grad_norm, tokens_trained = 0.0, None, torch.tensor(0.0), 0
    policy.train_mode(True)
    dev = policy.device
    for _ in range(cfg.ppo_epochs):
        optimizer.zero_grad(set_to_none=False)
        for idx in micro_batches(batch, rows, cfg.micro_batch_size):
            cm = batch.completion_mask[idx]
            tokens_trained += int(cm.sum())
            args = [t.to(dev) for t in trim_padding(batch.prompt_ids[idx],
                                                    batch.prompt_mask[idx],
                                                    batch.completion_ids[idx], cm)]
            width = args[2].shape[1]
            logp = policy.logprobs(*args, temperature=cfg.temperature)
            ref = policy.reference_logprobs(*args, temperature=cfg.temperature) \
                if cfg.kl_beta > 0 else None
            loss, stats = policy_loss(
                logp, batch.old_logp[idx, :width].to(dev), adv[idx].to(dev), args[3],
                surrogate=cfg.surrogate, aggregation=cfg.aggregation, eps_low=cfg.eps_low,
                eps_high=cfg.eps_high, ref_logp=ref,
                kl=cfg.kl_estimator if ref is not None else None, beta=cfg.kl_beta,
                max_len=cfg.max_new_tokens)
            total = loss * microbatch_scale(cfg.aggregation, cm, batch.completion_mask)
            aux = nudger.auxiliary_loss(policy, batch, idx, adv, temperature=cfg.temperature) \
                if nudger is not None else None
            if aux is not None:
                total = total + aux
                aux_sum = (aux_sum or 0.0) + float(aux.detach()) / cfg.ppo_epochs
            total.backward()
            total_loss += float(total.detach()) / cfg.ppo_epochs
            w = float(cm.sum())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * w
            sums["_w"] += w
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
    scheduler.step()
    policy.train_mode(False)
    w = sums.pop("_w")
    out = {k: v / w for k, v in sums.items() if k != "n_tokens"} if w else {}
    if aux_sum is not None:
        out["aux_loss"] = aux_sum
    out.update(loss=total_loss, grad_norm=float(grad_norm), rows_trained=int(len(rows)),
               tokens_trained=tokens_trained)
    return out
