"""Rollouts: G completions per prompt, scored, as records shared by toy and LM policies.

    batch = collect_rollouts(policy, problems, scorer, group_size=8, max_new_tokens=256,
                             generator=gen)
    batch.rewards, batch.correct, batch.group          # [N] tensors, N = len(problems) * G
    batch.to_frame()                                   # one row per completion (a Rollout)

A :class:`RolloutBatch` keeps, per completion row, the prompt text it is conditioned on (the
question, or the question with a hint appended), the hint, the token tensors the loss needs
and the sampling log-probs. Nudging (:mod:`nudgelib.nudging`) replaces rows of a group with
hinted ones through :meth:`RolloutBatch.replace_rows`; everything downstream reads the batch.

A scorer (:mod:`nudgelib.tasks.rewards`) turns each completion into (reward, correct).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from nudgelib.core.advantages import group_stats
from nudgelib.policies.base import Policy, Samples, left_pad, right_pad, shared_rows
from nudgelib.tasks.problems import Problem
from nudgelib.ui.progress import progress_bar

HINT_TEMPLATE = "{question}\n\nHint: {hint}"
"""How a hint is appended to a question (docs/method.md §2.2); the policy adds its instruction after."""


def hint_template(policy) -> str:
    """Where ``policy`` expects a hint: its ``hint_template`` attribute or :data:`HINT_TEMPLATE`."""
    return getattr(policy, "hint_template", HINT_TEMPLATE)


def prompt_text(question: str, hint: str | None = None, template: str = HINT_TEMPLATE) -> str:
    """The question alone, or the question with the hint placed by ``template``."""
    return question if hint is None else template.format(question=question, hint=hint)


# ----------------------------------------------------------------------------- records

@dataclass
class Rollout:
    """One completion with everything a learner wants to browse."""

    step: int
    group: int
    problem_id: str
    prompt: str
    hinted: bool
    hint: str | None
    completion: str
    completion_ids: list[int]
    reward: float
    correct: bool
    advantage: float | None
    length: int
    truncated: bool
    level: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NudgeInfo:
    """What a nudging strategy did to a batch (filled by :meth:`nudgelib.nudging.NudgingStrategy.
    nudge`; empty for a batch that was not nudged)."""

    nudged_groups: list[int] = field(default_factory=list)  # groups with hinted rows
    frac_nudged: float = 0.0  # their share of all groups
    conditioned_on_original: list[int] = field(default_factory=list)  # hinted rows scored
    #   under the plain question (condition_on="original")
    scaf_tier: dict[int, int] = field(default_factory=dict)  # Scaf-GRPO: group -> the tier
    #   (1-based) whose hint gave the success that replaced one failure


@dataclass
class ContextRows:
    """NudgeRL's per-row contexts: which context each row was sampled with (-1: none, it was
    dropped) and every row's prompt WITHOUT its context, for the distillation term."""

    context: Tensor  # [N] long
    plain_prompt_ids: Tensor  # [N, P'] left-padded
    plain_prompt_mask: Tensor  # [N, P']

    @property
    def n_context_rows(self) -> int:
        return int((self.context >= 0).sum())

    def select(self, idx: Tensor) -> ContextRows:
        return ContextRows(self.context[idx], self.plain_prompt_ids[idx],
                           self.plain_prompt_mask[idx])


@dataclass
class RolloutBatch:
    """Completion rows of one training step, grouped by problem (see the module docstring)."""

    problems: list[Problem]  # one per group
    group: Tensor  # [N] group index into `problems`
    prompts: list[str]  # [N] prompt text each row is conditioned on
    hints: list[str | None]  # [N]
    texts: list[str]  # [N]
    prompt_ids: Tensor  # [N, P] left-padded
    prompt_mask: Tensor  # [N, P]
    completion_ids: Tensor  # [N, T] right-padded
    completion_mask: Tensor  # [N, T]
    old_logp: Tensor  # [N, T] sampling log-probs
    truncated: Tensor  # [N] bool
    rewards: Tensor  # [N]
    correct: Tensor  # [N] bool
    advantages: Tensor | None = None
    step: int = 0
    pad_id: int = 0  # the policy's pad token (re-padding after hinted rows come in)
    nudge: NudgeInfo = field(default_factory=NudgeInfo)
    contexts: ContextRows | None = None  # NudgeRL only

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_groups(self) -> int:
        return len(self.problems)

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1).long()

    @property
    def hinted(self) -> Tensor:
        return torch.tensor([h is not None for h in self.hints], dtype=torch.bool)

    def group_rows(self, g: int) -> list[int]:
        return (self.group == g).nonzero().flatten().tolist()

    def group_pass_counts(self) -> Tensor:
        """Number of correct completions per group [n_groups]."""
        return torch.zeros(self.n_groups).index_add_(0, self.group, self.correct.float())

    def group_sizes(self) -> Tensor:
        return torch.bincount(self.group, minlength=self.n_groups)

    def frac_zero_std(self) -> float:
        """Share of groups whose rewards are all equal: they give GRPO no gradient."""
        st = group_stats(self.rewards, self.group)  # its std is exactly 0 for such groups
        per_group = torch.zeros(st.n_groups).scatter_(0, st.index, (st.std == 0).float())
        return float(per_group.mean())

    def records(self) -> list[Rollout]:
        adv = self.advantages.tolist() if self.advantages is not None else [None] * len(self)
        lengths = self.lengths.tolist()
        out = []
        for i in range(len(self)):
            p = self.problems[int(self.group[i])]
            ids = self.completion_ids[i, :lengths[i]].tolist()
            out.append(Rollout(step=self.step, group=int(self.group[i]), problem_id=p.id,
                               prompt=self.prompts[i], hinted=self.hints[i] is not None,
                               hint=self.hints[i], completion=self.texts[i],
                               completion_ids=ids, reward=float(self.rewards[i]),
                               correct=bool(self.correct[i]), advantage=adv[i],
                               length=lengths[i], truncated=bool(self.truncated[i]),
                               level=p.level))
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.records()])

    def _pad_to(self, pw: int, cw: int) -> None:
        """Widen prompts (left) and completions (right) in place to pw / cw positions."""
        pad = int(self.pad_id)
        lp = lambda t, v: torch.nn.functional.pad(t, (pw - t.shape[1], 0), value=v)  # noqa: E731
        self.prompt_ids, self.prompt_mask = lp(self.prompt_ids, pad), lp(self.prompt_mask, 0)
        self.completion_ids = right_pad(self.completion_ids, cw, pad)
        self.completion_mask = right_pad(self.completion_mask, cw, 0.0)
        self.old_logp = right_pad(self.old_logp, cw, 0.0)

    def replace_rows(self, rows: Sequence[int], new: RolloutBatch) -> None:
        """Overwrite completion rows ``rows`` with the rows of ``new`` (same order, same count).

        Tensors are re-padded to the wider of the two (prompts on the left, completions on the
        right) so hinted prompts may be longer than the originals. Group membership of the
        replaced rows is kept; advantages are reset (they must be recomputed).
        """
        rows = list(rows)
        if len(rows) != len(new):
            raise ValueError(f"replace_rows got {len(rows)} rows but {len(new)} replacements")
        pw = max(self.prompt_ids.shape[1], new.prompt_ids.shape[1])
        cw = max(self.completion_ids.shape[1], new.completion_ids.shape[1])
        self._pad_to(pw, cw)
        new._pad_to(pw, cw)
        idx = torch.tensor(rows, dtype=torch.long)
        for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
                     "old_logp", "truncated", "rewards", "correct"):
            getattr(self, name)[idx] = getattr(new, name)
        for j, r in enumerate(rows):
            self.prompts[r], self.hints[r], self.texts[r] = new.prompts[j], new.hints[j], new.texts[j]
        self.advantages = None

    def select(self, rows: Sequence[int]) -> RolloutBatch:
        """A new batch of the rows ``rows`` (same problems and group indices)."""
        idx = torch.tensor(list(rows), dtype=torch.long)
        pick = lambda name: getattr(self, name)[idx]  # noqa: E731
        return RolloutBatch(
            problems=self.problems, group=pick("group"), prompts=[self.prompts[i] for i in rows],
            hints=[self.hints[i] for i in rows], texts=[self.texts[i] for i in rows],
            prompt_ids=pick("prompt_ids"), prompt_mask=pick("prompt_mask"),
            completion_ids=pick("completion_ids"), completion_mask=pick("completion_mask"),
            old_logp=pick("old_logp"), truncated=pick("truncated"), rewards=pick("rewards"),
            correct=pick("correct"), step=self.step, pad_id=self.pad_id,
            contexts=self.contexts.select(idx) if self.contexts is not None else None)

    @staticmethod
    def concat(parts: Sequence[RolloutBatch], problems: list[Problem]) -> RolloutBatch:
        """Stack batches whose ``group`` indices already refer to ``problems``."""
        parts = list(parts)
        if any(p.contexts is not None for p in parts):
            raise ValueError("RolloutBatch.concat: batches with NudgeRL contexts are not "
                             "concatenated (their plain prompts have different widths)")
        pw = max(p.prompt_ids.shape[1] for p in parts)
        cw = max(p.completion_ids.shape[1] for p in parts)
        for p in parts:
            p._pad_to(pw, cw)
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        return RolloutBatch(
            problems=problems, group=cat("group"), prompts=[x for p in parts for x in p.prompts],
            hints=[x for p in parts for x in p.hints], texts=[x for p in parts for x in p.texts],
            prompt_ids=cat("prompt_ids"), prompt_mask=cat("prompt_mask"),
            completion_ids=cat("completion_ids"), completion_mask=cat("completion_mask"),
            old_logp=cat("old_logp"), truncated=cat("truncated"), rewards=cat("rewards"),
            correct=cat("correct"), step=parts[0].step, pad_id=parts[0].pad_id)


def trim_padding(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                 completion_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Drop the prompt columns that are left padding in every row and the completion columns
    past the longest completion: what a micro-batch of a wider batch needs for its forward."""
    keep = int(prompt_mask.sum(0).nonzero().min()) if prompt_mask.any() else prompt_mask.shape[1] - 1
    width = max(1, int(completion_mask.sum(-1).max()))
    return (prompt_ids[:, keep:], prompt_mask[:, keep:], completion_ids[:, :width],
            completion_mask[:, :width])


def length_buckets(lengths: Sequence[int], prompt_keys: Sequence, prompt_lengths: Sequence[int],
                   max_rows: int, *, call_cost: int = 32) -> list[list[int]]:
    """Split rows into micro-batches of at most ``max_rows`` that waste little padding.

    A micro-batch's forward costs about ``rows x its longest completion`` (completions are
    padded to it) + the tokens of its distinct prompts (each prompt runs once, see
    :meth:`nudgelib.policies.hf.HFPolicy.logprobs`) + ``call_cost``. Rows sorted by length are
    cut where that total is smallest (dynamic programming, O(rows x max_rows)). Returns lists
    of row positions; every row appears once.
    """
    n = len(lengths)
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    order = sorted(range(n), key=lambda i: (-int(lengths[i]), i))
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        seen, prompt_cost = set(), 0
        for i in range(j - 1, max(-1, j - 1 - max_rows), -1):  # bucket = order[i:j]
            r = order[i]
            if prompt_keys[r] not in seen:
                seen.add(prompt_keys[r])
                prompt_cost += int(prompt_lengths[r])
            cost = best[i] + (j - i) * int(lengths[order[i]]) + prompt_cost + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    buckets, j = [], n
    while j > 0:
        buckets.append(order[cut[j]:j])
        j = cut[j]
    return buckets[::-1]


def micro_batches(batch: RolloutBatch, rows: Tensor, size: int) -> list[Tensor]:
    """``rows`` of ``batch`` in micro-batches of at most ``size``, grouped by completion length
    and prompt (:func:`length_buckets`, whose cost model is the prompt-sharing forward of
    :meth:`nudgelib.policies.hf.HFPolicy.logprobs`); the loss is the same, see
    :func:`nudgelib.core.losses.microbatch_scale`."""
    if len(rows) == 0:
        return []
    _, prompt_key = shared_rows(batch.prompt_ids[rows], batch.prompt_mask[rows])
    buckets = length_buckets(batch.completion_mask[rows].sum(-1).tolist(), prompt_key.tolist(),
                             batch.prompt_mask[rows].sum(-1).tolist(), size)
    return [rows[torch.tensor(b, dtype=torch.long)] for b in buckets]


def _from_samples(problems: list[Problem], group: Tensor, hints: list[str | None],
                  s: Samples, scorer, pad_id: int, step: int) -> RolloutBatch:
    per_row = [problems[int(g)] for g in group]
    rewards, correct = scorer(per_row, s.texts, s.lengths.tolist(), s.truncated.tolist())
    if len(rewards) != len(s) or len(correct) != len(s):
        raise ValueError(f"scorer returned {len(rewards)} rewards / {len(correct)} verdicts for "
                         f"{len(s)} completions")
    return RolloutBatch(problems=problems, group=group, prompts=list(s.prompts), hints=hints,
                        texts=list(s.texts), prompt_ids=s.prompt_ids.cpu(),
                        prompt_mask=s.prompt_mask.cpu(), completion_ids=s.completion_ids.cpu(),
                        completion_mask=s.completion_mask.cpu(), old_logp=s.logp.cpu(),
                        truncated=s.truncated.cpu(),
                        rewards=torch.tensor(rewards, dtype=torch.float32),
                        correct=torch.tensor(correct, dtype=torch.bool), step=step,
                        pad_id=pad_id)


def sample_rows(policy: Policy, problems: Sequence[Problem], group_ids: Sequence[int],
                hints: Sequence[str | None], scorer, *, temperature: float = 1.0,
                top_p: float = 1.0, max_new_tokens: int = 64,
                generator: torch.Generator | None = None, step: int = 0,
                all_problems: list[Problem] | None = None,
                template: str | None = None) -> RolloutBatch:
    """One completion per (problem, hint) row, scored; rows carry ``group_ids``.

    The building block of both plain rollouts and nudging (which re-samples some members of a
    group under a hinted prompt). ``template`` defaults to the policy's ``hint_template``.
    """
    template = template or hint_template(policy)
    prompts = [prompt_text(p.question, h, template) for p, h in zip(problems, hints)]
    s = policy.sample(prompts, 1, temperature=temperature, top_p=top_p,
                      max_new_tokens=max_new_tokens, generator=generator)
    group = torch.tensor(list(group_ids), dtype=torch.long)
    return _from_samples(all_problems if all_problems is not None else list(problems), group,
                         list(hints), s, scorer, policy.pad_id, step)


def collect_rollouts(policy: Policy, problems: Sequence[Problem], scorer, *, group_size: int,
                     temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                     generator: torch.Generator | None = None, prompts_per_call: int | None = None,
                     hints: Sequence[str | None] | None = None, step: int = 0,
                     progress: bool = False, template: str | None = None) -> RolloutBatch:
    """Sample ``group_size`` completions for each problem and score them.

    ``hints[i]`` (optional) is appended to problem i's question for all its members.
    ``prompts_per_call`` bounds how many prompts go through the policy at once (memory).
    ``template`` places the hint; it defaults to the policy's ``hint_template``.
    """
    problems = list(problems)
    if not problems:
        raise ValueError("collect_rollouts needs at least one problem")
    template = template or hint_template(policy)
    hints = list(hints) if hints is not None else [None] * len(problems)
    if len(hints) != len(problems):
        raise ValueError(f"hints has {len(hints)} entries for {len(problems)} problems")
    per_call = prompts_per_call or len(problems)
    parts = []
    starts = range(0, len(problems), per_call)
    for i in progress_bar(starts, desc=f"rollouts (G={group_size})", disable=not progress, leave=False):
        chunk = range(i, min(i + per_call, len(problems)))
        prompts = [prompt_text(problems[j].question, hints[j], template) for j in chunk]
        s = policy.sample(prompts, group_size, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, generator=generator)
        group = torch.tensor(list(chunk), dtype=torch.long).repeat_interleave(group_size)
        parts.append(_from_samples(problems, group, [hints[j] for j in chunk
                                                     for _ in range(group_size)],
                                   s, scorer, policy.pad_id, step))
    return RolloutBatch.concat(parts, problems)


def evaluate_pass_counts(policy: Policy, problems: Sequence[Problem], scorer, *, n_samples: int,
                         temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                         generator: torch.Generator | None = None,
                         prompts_per_call: int | None = None, progress: bool = False) -> list[int]:
    """Correct completions out of ``n_samples`` per problem, WITHOUT hints (for pass@k)."""
    batch = collect_rollouts(policy, problems, scorer, group_size=n_samples,
                             temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                             generator=generator, prompts_per_call=prompts_per_call,
                             progress=progress)
    return [int(c) for c in batch.group_pass_counts().tolist()]


# ----------------------------------------------------------------------------- what a hint did

@torch.no_grad()
def hint_reliance(policy: Policy, batch: RolloutBatch, rows: Sequence[int], *,
                  temperature: float = 1.0) -> Tensor:
    """Per row of ``rows`` (hinted completions): the mean per-token log-ratio
    log pi(y | q, hint) - log pi(y | q), the first from the sampling log-probs, the second from a
    forward pass under the question alone. Large: the completion leans on the hint (copied
    from it), and training it under the hinted prompt teaches little for the hint-free one
    (the "hint reliance" of HiLL, arXiv 2604.00698). Empty ``rows``: an empty tensor."""
    rows = list(rows)
    if not rows:
        return torch.zeros(0)
    plain = policy.encode_prompts([batch.problems[int(batch.group[r])].question for r in rows])
    ids, mask = left_pad(plain, policy.pad_id)
    idx = torch.tensor(rows, dtype=torch.long)
    cm = batch.completion_mask[idx]
    args = [t.to(policy.device) for t in trim_padding(ids, mask, batch.completion_ids[idx], cm)]
    width = args[2].shape[1]
    lp_plain = policy.logprobs(*args, temperature=temperature).float().cpu()
    cm = cm[:, :width].float()
    diff = (batch.old_logp[idx, :width].float() - lp_plain) * cm
    return diff.sum(-1) / cm.sum(-1).clamp(min=1)


def nudge_metrics(policy: Policy, batch: RolloutBatch, *, temperature: float = 1.0) -> dict:
    """What the nudging produced this step: ``hinted_successes`` (hinted rows that passed) and
    their mean ``hint_reliance`` (:func:`hint_reliance`; None without hinted successes)."""
    ok = (batch.hinted & batch.correct).nonzero().flatten().tolist()
    rel = hint_reliance(policy, batch, ok, temperature=temperature)
    return {"hinted_successes": len(ok),
            "hint_reliance": float(rel.mean()) if len(ok) else None}
