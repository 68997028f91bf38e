"""What a nudging strategy may sample with: :class:`SamplingContext` (the policy, the scorer,
the sampling settings, the generator) and the compute ledger it keeps (:data:`LEDGER_KEYS`).
The training loop builds one per step (:mod:`nudgelib.training.step`); strategies
(:mod:`nudgelib.nudging`) draw rows through it, never through the trainer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from nudgelib.rollouts import RolloutBatch, collect_rollouts, sample_rows
from nudgelib.tasks.problems import Problem

LEDGER_KEYS = ("model_calls", "tokens_plain", "tokens_hinted", "tokens_resampled", "rows_plain",
               "rows_hinted", "rows_resampled")
"""The compute ledger of a :class:`SamplingContext`: sampling calls to the policy, and the
completion tokens (and rows) sampled plain (a step's first draw), with a hint, or hint-free
again by a strategy (dynamic sampling's redraws, NuRL's ``keep="fresh"`` row). The training
step adds ``tokens_trained``; a run's metrics log each step's share as ``cost_<key>``."""


# ----------------------------------------------------------------------------- context

@dataclass
class SamplingContext:
    """What a strategy needs to sample more rollouts; the training loop builds one per step.

    ``rows_sampled`` counts the rows :meth:`sample_rows` has sampled (the training loop logs the
    re-sampling a strategy does as ``rows_resampled``).
    """

    policy: object
    scorer: object
    group_size: int
    max_new_tokens: int
    generator: torch.Generator
    temperature: float = 1.0
    top_p: float = 1.0
    step: int = 0
    prompts_per_call: int | None = None
    rows_sampled: int = 0
    ledger: dict = field(default_factory=lambda: dict.fromkeys(LEDGER_KEYS, 0))

    def collect(self, problems: Sequence[Problem], hints: Sequence[str | None] | None = None,
                *, progress: bool = False, resample: bool = False) -> RolloutBatch:
        """``group_size`` rollouts per problem (:func:`nudgelib.rollouts.collect_rollouts`);
        ``resample``: hint-free rows are booked as sampled again (see :data:`LEDGER_KEYS`)."""
        batch = collect_rollouts(self.policy, problems, self.scorer, group_size=self.group_size,
                                 temperature=self.temperature, top_p=self.top_p,
                                 max_new_tokens=self.max_new_tokens, generator=self.generator,
                                 prompts_per_call=self.prompts_per_call, hints=hints,
                                 step=self.step, progress=progress)
        per_call = self.prompts_per_call or len(problems)
        self._book(batch, resample, calls=-(-len(problems) // per_call))
        return batch

    def sample_rows(self, problems, group_ids, hints, all_problems, *,
                    resample: bool = False) -> RolloutBatch:
        """One completion per row; chunked by ``prompts_per_call * group_size`` rows.
        ``resample``: hint-free rows are booked as sampled again (see :data:`LEDGER_KEYS`)."""
        chunk = (self.prompts_per_call or len(problems)) * max(1, self.group_size)
        parts = []
        for i in range(0, len(problems), chunk):
            parts.append(sample_rows(
                self.policy, problems[i:i + chunk], group_ids[i:i + chunk], hints[i:i + chunk],
                self.scorer, temperature=self.temperature, top_p=self.top_p,
                max_new_tokens=self.max_new_tokens, generator=self.generator, step=self.step,
                all_problems=all_problems))
        self.rows_sampled += len(problems)
        batch = parts[0] if len(parts) == 1 else RolloutBatch.concat(parts, all_problems)
        self._book(batch, resample, calls=len(parts))
        return batch

    def _book(self, batch: RolloutBatch, resample: bool, calls: int) -> None:
        """Add a sampled batch to the ledger: its model calls, and its completion tokens and
        rows as hinted (any row with a hint), resampled or plain."""
        lengths, hinted = batch.lengths, batch.hinted
        plain = "resampled" if resample else "plain"
        led = self.ledger
        led["model_calls"] += calls
        led["tokens_hinted"] += int(lengths[hinted].sum())
        led["rows_hinted"] += int(hinted.sum())
        led[f"tokens_{plain}"] += int(lengths[~hinted].sum())
        led[f"rows_{plain}"] += int((~hinted).sum())
