"""Nudging strategies: NuRL's 0/G trigger and its siblings behind one interface.

A strategy is the trainer's nudging hook (``nudger(trainer, batch) -> batch``, see
:mod:`nudgelib.train`). It may also sample the whole batch itself (:meth:`sample`), set the
advantages itself, and add a term to the loss (:meth:`auxiliary_loss`).

=========  ==============================================================================
name       what it does to a step's groups (METHOD.md sections 2-3)
=========  ==============================================================================
nurl       a group whose G rollouts ALL fail (pass rate 0) keeps one failed rollout and
           regenerates the other G-1 with the hint appended to the question; groups with
           pass rate > 0 are left alone (NuRL, arXiv 2509.25666)
scaf       a 0/G group tries tiered, cumulative hints (abstract, then + partial steps, then
           + explanation); the first rollout that succeeds under the least hint replaces ONE
           failed rollout; if no tier works the group stays (Scaf-GRPO, arXiv 2510.19807)
nudgerl    every prompt gets ``n_contexts`` strategy contexts x G / n_contexts rollouts; each
           rollout drops its context with probability ``p_drop``; advantages by the
           inter/intra-context decomposition (:func:`nudgerl_advantages`); the loss adds
           ``distill_coef`` x the advantage-weighted, length-normalised log-likelihood of each
           context rollout under the prompt WITHOUT its context (NudgeRL, arXiv 2605.15726)
always     every prompt is sampled with its hint (the paper's "hints always" ablation)
=========  ==============================================================================

``condition_on`` (nurl, scaf): ``"hinted"`` scores a hinted rollout under the prompt it was
sampled from (on-policy; Scaf-GRPO's choice, nudgelib's default); ``"original"`` scores it under
the plain question while its sampling log-probs stay those of the hinted prompt, so the PPO
ratio is pi(y | q) / pi_old(y | q, hint) — the off-policy variant Scaf-GRPO measured as worse.

Hints are only ever used for training rollouts: evaluation (:func:`nudgelib.rollouts.
evaluate_pass_counts`) has no hint argument at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nudgelib.hints import as_hint_source
from nudgelib.policies import left_pad
from nudgelib.problems import Problem
from nudgelib.rollouts import RolloutBatch, collect_rollouts, sample_rows, trim_padding

CONDITION_ON = ("hinted", "original")


# ----------------------------------------------------------------------------- context

@dataclass
class SamplingContext:
    """What a strategy needs to sample more rollouts (a trainer provides all of it)."""

    policy: object
    scorer: object
    group_size: int
    max_new_tokens: int
    generator: torch.Generator
    temperature: float = 1.0
    top_p: float = 1.0
    step: int = 0
    prompts_per_call: int | None = None

    @classmethod
    def from_trainer(cls, trainer) -> SamplingContext:
        cfg = trainer.cfg
        return cls(policy=trainer.policy, scorer=trainer.scorer, group_size=cfg.group_size,
                   max_new_tokens=cfg.max_new_tokens, generator=trainer.sample_rng,
                   temperature=cfg.temperature, top_p=cfg.top_p, step=trainer.step + 1,
                   prompts_per_call=cfg.prompts_per_call or None)

    def collect(self, problems: Sequence[Problem], hints: Sequence[str | None] | None = None,
                *, progress: bool = False) -> RolloutBatch:
        """``group_size`` rollouts per problem (:func:`nudgelib.rollouts.collect_rollouts`)."""
        return collect_rollouts(self.policy, problems, self.scorer, group_size=self.group_size,
                                temperature=self.temperature, top_p=self.top_p,
                                max_new_tokens=self.max_new_tokens, generator=self.generator,
                                prompts_per_call=self.prompts_per_call, hints=hints,
                                step=self.step, progress=progress)

    def sample_rows(self, problems, group_ids, hints, all_problems) -> RolloutBatch:
        """One completion per row; chunked by ``prompts_per_call * group_size`` rows."""
        chunk = (self.prompts_per_call or len(problems)) * max(1, self.group_size)
        parts = []
        for i in range(0, len(problems), chunk):
            parts.append(sample_rows(
                self.policy, problems[i:i + chunk], group_ids[i:i + chunk], hints[i:i + chunk],
                self.scorer, temperature=self.temperature, top_p=self.top_p,
                max_new_tokens=self.max_new_tokens, generator=self.generator, step=self.step,
                all_problems=all_problems))
        return parts[0] if len(parts) == 1 else RolloutBatch.concat(parts, all_problems)


# ----------------------------------------------------------------------------- base

class NudgingStrategy:
    """Base class: no nudging. Subclasses override :meth:`augment` and/or :meth:`sample`."""

    name = "none"

    def __init__(self, hints=None, *, hint_type: str = "abstract",
                 condition_on: str = "hinted"):
        if condition_on not in CONDITION_ON:
            raise ValueError(f"condition_on={condition_on!r}; expected one of {CONDITION_ON}")
        self.hint_source = None
        self.hint_type, self.condition_on = hint_type, condition_on
        self.hint_types: tuple[str, ...] = (hint_type,)  # what hint_for will be asked for
        if hints is not None:
            self.use_hints(hints)
        self.totals = {"steps": 0, "groups": 0, "nudged_groups": 0, "hinted_rows": 0,
                       "hinted_correct": 0, "missing_hints": 0}

    def use_hints(self, hints) -> None:
        """Attach hints: a HintBank, a dict or a function (problem, hint_type) -> hint."""
        self.hint_source = as_hint_source(hints)

    def hint_for(self, problem: Problem, hint_type: str | None = None) -> str | None:
        if self.hint_source is None:
            raise ValueError(f"nudging strategy {self.name!r} needs hints; pass a HintBank, a "
                             f"dict or a function (problem, hint_type) -> hint")
        return self.hint_source(problem, hint_type or self.hint_type)

    # -- the hook
    def sample(self, problems: Sequence[Problem], ctx: SamplingContext) -> RolloutBatch | None:
        """Sample the step's batch in a strategy-specific way, or None for plain G per prompt."""
        return None

    def augment(self, batch: RolloutBatch, ctx: SamplingContext) -> RolloutBatch:
        """Change groups of a scored batch (in place or not); returns the batch to train on."""
        return batch

    def auxiliary_loss(self, policy, batch: RolloutBatch, rows: Tensor, *,
                       temperature: float = 1.0) -> Tensor | None:
        """An extra loss term for the micro-batch ``rows`` (already normalised over the batch)."""
        return None

    def __call__(self, trainer, batch: RolloutBatch) -> RolloutBatch:
        return self.finish(self.augment(batch, SamplingContext.from_trainer(trainer)))

    def finish(self, batch: RolloutBatch) -> RolloutBatch:
        """Record ``frac_nudged`` (share of groups with hinted members) and running totals."""
        hinted = batch.hinted
        nudged = torch.zeros(batch.n_groups).index_add_(0, batch.group, hinted.float()) > 0
        batch.extra["frac_nudged"] = float(nudged.float().mean()) if batch.n_groups else 0.0
        batch.extra["nudged_groups"] = nudged.nonzero().flatten().tolist()
        t = self.totals
        t["steps"] += 1
        t["groups"] += batch.n_groups
        t["nudged_groups"] += int(nudged.sum())
        t["hinted_rows"] += int(hinted.sum())
        t["hinted_correct"] += int(batch.correct[hinted].sum())
        return batch

    # -- checkpointing
    def state_dict(self) -> dict:
        return {"totals": dict(self.totals)}

    def load_state_dict(self, state: dict) -> None:
        self.totals.update(state.get("totals", {}))


def _zero_pass_groups(batch: RolloutBatch) -> list[int]:
    """Groups whose rollouts were all wrong and carry no hint yet: the trigger of NuRL/Scaf."""
    passes = batch.group_pass_counts()
    hinted = batch.hinted
    out = []
    for g in range(batch.n_groups):
        rows = batch.group_rows(g)
        if len(rows) >= 2 and passes[g] == 0 and not hinted[rows].any():
            out.append(g)
    return out


def _condition_on_original(batch: RolloutBatch, pairs: Sequence[tuple[int, int]]) -> None:
    """Make each hinted row ``r`` of (r, plain_row) pairs score under ``plain_row``'s prompt."""
    for r, plain in pairs:
        batch.prompt_ids[r] = batch.prompt_ids[plain]
        batch.prompt_mask[r] = batch.prompt_mask[plain]
    batch.extra.setdefault("conditioned_on_original", []).extend(r for r, _ in pairs)


# ----------------------------------------------------------------------------- NuRL

class NuRL(NudgingStrategy):
    """NuRL's trigger (METHOD.md 2.2): regenerate G-1 members of a 0/G group with the hint.

    ``keep="failure"`` keeps the first failed rollout unchanged (the paper's reading);
    ``keep="fresh"`` replaces it with a fresh hint-free sample (METHOD.md 2.2, OPEN).
    """

    name = "nurl"

    def __init__(self, hints=None, *, hint_type: str = "abstract", condition_on: str = "hinted",
                 keep: str = "failure"):
        super().__init__(hints, hint_type=hint_type, condition_on=condition_on)
        if keep not in ("failure", "fresh"):
            raise ValueError(f"keep={keep!r}; expected 'failure' or 'fresh'")
        self.keep = keep

    def augment(self, batch, ctx):
        fire = []
        for g in _zero_pass_groups(batch):
            hint = self.hint_for(batch.problems[g])
            if hint is None:
                self.totals["missing_hints"] += 1
                continue
            fire.append((g, batch.group_rows(g), hint))
        if not fire:
            return batch
        rows, probs, groups, hints = [], [], [], []
        for g, members, hint in fire:
            targets = members if self.keep == "fresh" else members[1:]
            for r in targets:
                rows.append(r)
                probs.append(batch.problems[g])
                groups.append(g)
                hints.append(None if (self.keep == "fresh" and r == members[0]) else hint)
        new = ctx.sample_rows(probs, groups, hints, batch.problems)
        batch.replace_rows(rows, new)
        if self.condition_on == "original":
            _condition_on_original(batch, [(r, m[0]) for _, m, _ in fire for r in m[1:]])
        return batch


# ----------------------------------------------------------------------------- Scaf-GRPO

SCAF_TIERS = ("abstract", "partial_steps", "explanation")
"""Scaf-GRPO's Knowledge -> Planning -> Solution tiers, as hint types of a bank."""


class ScafGRPO(NudgingStrategy):
    """Scaf-GRPO's tiered scaffolding (METHOD.md 3): replace ONE failure with the success
    under the least (cumulative) hint that works.

    For each 0/G group, tier k's hint is the texts of ``tiers[:k+1]`` joined by a blank line
    (``combine="join"``), or tier k's text alone (``combine="last"``, for hints that already
    contain the lower tiers, like the toy hints); ``tries_per_tier`` rollouts are sampled per
    tier until one is correct.
    """

    name = "scaf"

    def __init__(self, hints=None, *, tiers: Sequence[str] = SCAF_TIERS,
                 tries_per_tier: int = 2, condition_on: str = "hinted",
                 combine: str = "join"):
        super().__init__(hints, hint_type=tiers[0] if tiers else "abstract",
                         condition_on=condition_on)
        if combine not in ("join", "last"):
            raise ValueError(f"combine={combine!r}; expected 'join' or 'last'")
        self.combine = combine
        if not tiers:
            raise ValueError("ScafGRPO needs at least one hint tier")
        if not isinstance(tries_per_tier, int) or tries_per_tier < 1:
            raise ValueError(f"tries_per_tier must be an integer >= 1, got {tries_per_tier!r}")
        self.tiers, self.tries = tuple(tiers), tries_per_tier
        self.hint_types = self.tiers
        self.totals.update(tried_groups=0, **{f"solved_at_tier_{k + 1}": 0
                                              for k in range(len(self.tiers))})

    def cumulative_hint(self, problem: Problem, tier: int) -> str | None:
        parts = [self.hint_for(problem, t) for t in self.tiers[:tier + 1]]
        parts = [p for p in parts if p]
        if not parts:
            return None
        return "\n\n".join(parts) if self.combine == "join" else parts[-1]

    def augment(self, batch, ctx):
        pending = _zero_pass_groups(batch)
        self.totals["tried_groups"] += len(pending)
        winners: dict[int, tuple[RolloutBatch, int, int]] = {}
        last_hint: dict[int, str | None] = {}
        for k in range(len(self.tiers)):
            todo = []
            for g in pending:
                h = self.cumulative_hint(batch.problems[g], k)
                if h is not None and h != last_hint.get(g):
                    todo.append((g, h))
                last_hint[g] = h
            if not todo:
                continue
            probs = [batch.problems[g] for g, _ in todo for _ in range(self.tries)]
            groups = [g for g, _ in todo for _ in range(self.tries)]
            hints = [h for _, h in todo for _ in range(self.tries)]
            new = ctx.sample_rows(probs, groups, hints, batch.problems)
            for j, g in enumerate(groups):
                if g not in winners and bool(new.correct[j]):
                    winners[g] = (new, j, k)
            pending = [g for g in pending if g not in winners]
            if not pending:
                break
        pairs = []
        for g, (new, j, k) in sorted(winners.items()):
            members = batch.group_rows(g)
            batch.replace_rows([members[-1]], new.select([j]))
            pairs.append((members[-1], members[0]))
            self.totals[f"solved_at_tier_{k + 1}"] += 1
        if pairs and self.condition_on == "original":
            _condition_on_original(batch, pairs)
        batch.extra["scaf_tier"] = {g: k + 1 for g, (_, _, k) in winners.items()}
        return batch


# ----------------------------------------------------------------------------- always

class AlwaysHint(NudgingStrategy):
    """Every prompt sampled with its hint, all G rollouts (METHOD.md 2.6, "hints always")."""

    name = "always"

    def sample(self, problems, ctx):
        return ctx.collect(problems, [self.hint_for(p) for p in problems])


# ----------------------------------------------------------------------------- NudgeRL

def nudgerl_advantages(rewards: Tensor, group_ids: Tensor, context: Tensor, *,
                       lam: float = 1.1, eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    """NudgeRL's inter/intra-context advantage (arXiv 2605.15726; METHOD.md 3).

    Per problem (group), with m = mean reward of all its rollouts and m_c = mean reward of the
    rollouts that kept context c (``context`` = c >= 0; -1 = no context):

        a_i = (r_i - m_c) + lam * (m_c - m)     for a rollout under context c
        a_i = r_i - m                            for a rollout without context

    then standardised per problem: (a - mean(a)) / (std(a) + eps) (Bessel std unless
    ``unbiased=False``); a problem whose a are all equal gets 0.
    """
    from nudgelib.advantages import group_stats

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


class NudgeRL(NudgingStrategy):
    """NudgeRL (METHOD.md 3): strategy contexts on every prompt, context dropout, the
    inter/intra-context advantage and the distillation term on the context-free prompt.

    Contexts are the bank's hints of ``context_types`` (default: abstract, partial_steps); a
    problem with fewer contexts than ``n_contexts`` reuses the ones it has, one with none is
    sampled plainly.
    """

    name = "nudgerl"

    def __init__(self, hints=None, *, context_types: Sequence[str] = ("abstract", "partial_steps"),
                 n_contexts: int = 2, p_drop: float = 0.5, lam: float = 1.1,
                 distill_coef: float = 0.1):
        super().__init__(hints, hint_type=context_types[0] if context_types else "abstract")
        if not context_types:
            raise ValueError("NudgeRL needs at least one context type")
        if not isinstance(n_contexts, int) or n_contexts < 1:
            raise ValueError(f"n_contexts must be an integer >= 1, got {n_contexts!r}")
        if not 0 <= p_drop <= 1:
            raise ValueError(f"p_drop must be in [0, 1], got {p_drop!r}")
        self.context_types, self.n_contexts = tuple(context_types), n_contexts
        self.hint_types = self.context_types
        self.p_drop, self.lam, self.distill_coef = float(p_drop), float(lam), float(distill_coef)

    def contexts(self, problem: Problem) -> list[str]:
        found = [self.hint_for(problem, t) for t in self.context_types]
        found = [h for h in found if h]
        return [found[i % len(found)] for i in range(self.n_contexts)] if found else []

    def sample(self, problems, ctx):
        G = ctx.group_size
        if G % self.n_contexts:
            raise ValueError(f"NudgeRL splits each group into n_contexts={self.n_contexts} "
                             f"equal parts; group_size={G} is not a multiple")
        per = G // self.n_contexts
        problems = list(problems)
        rows_p, rows_g, rows_h, rows_c = [], [], [], []
        for g, p in enumerate(problems):
            cs = self.contexts(p)
            if not cs:
                self.totals["missing_hints"] += 1
            drop = torch.rand(G, generator=ctx.generator) < self.p_drop
            for i in range(G):
                c = i // per
                keep = bool(cs) and not bool(drop[i])
                rows_p.append(p)
                rows_g.append(g)
                rows_h.append(cs[c] if keep else None)
                rows_c.append(c if keep else -1)
        batch = ctx.sample_rows(rows_p, rows_g, rows_h, problems)
        context = torch.tensor(rows_c, dtype=torch.long)
        batch.extra["context"] = context
        batch.extra["n_context_rows"] = int((context >= 0).sum())
        plain = ctx.policy.encode_prompts([p.question for p in rows_p])
        ids, mask = left_pad(plain, ctx.policy.pad_id)
        batch.extra["plain_prompt_ids"], batch.extra["plain_prompt_mask"] = ids, mask
        batch.advantages = nudgerl_advantages(batch.rewards, batch.group, context, lam=self.lam)
        return batch

    def auxiliary_loss(self, policy, batch, rows, *, temperature=1.0):
        """-distill_coef * sum_i A_i * mean_t log pi(o_it | q without context) / N_context,
        over the context rollouts among ``rows`` (N_context: all context rows of the batch)."""
        if self.distill_coef == 0 or "context" not in batch.extra:
            return None
        sel = rows[batch.extra["context"][rows] >= 0]
        if len(sel) == 0:
            return None
        dev = policy.device
        args = [t.to(dev) for t in trim_padding(
            batch.extra["plain_prompt_ids"][sel], batch.extra["plain_prompt_mask"][sel],
            batch.completion_ids[sel], batch.completion_mask[sel])]
        cm = args[3]
        logp = policy.logprobs(*args, temperature=temperature)
        per_seq = (logp * cm).sum(-1) / cm.sum(-1).clamp(min=1)
        adv = batch.advantages[sel].to(dev)
        return -self.distill_coef * (adv * per_seq).sum() / max(1, batch.extra["n_context_rows"])


# ----------------------------------------------------------------------------- registry

STRATEGIES = {"none": NudgingStrategy, "nurl": NuRL, "scaf": ScafGRPO, "nudgerl": NudgeRL,
              "always": AlwaysHint}
"""Strategy classes by the names of the CLI's ``--nudging``."""


def make_strategy(name: str, hints=None, **options) -> NudgingStrategy:
    """``STRATEGIES[name](hints, **options)`` with an error that names what is wrong."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown nudging strategy {name!r}; expected one of "
                         f"{sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](hints, **options)
    except TypeError as err:
        raise ValueError(f"nudging strategy {name!r}: bad option ({err})") from None


# ----------------------------------------------------------------------------- two stages

class PlateauDetector:
    """Fires when a metric's moving average has not improved for ``patience`` updates.

    Each :meth:`update` takes one value (e.g. the step's mean training reward); the moving
    average is over the last ``window`` values. An improvement is an average above the best so
    far by more than ``min_delta``. METHOD.md 2.4: the paper moves to stage 2 after 10 steps
    without improvement.
    """

    def __init__(self, patience: int = 10, *, window: int = 5, min_delta: float = 0.0):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.patience, self.window, self.min_delta = patience, window, float(min_delta)
        self.values: list[float] = []
        self.best = float("-inf")
        self.since_best = 0

    def update(self, value: float) -> bool:
        """Add a value; True once the plateau is reached."""
        self.values.append(float(value))
        avg = sum(self.values[-self.window:]) / len(self.values[-self.window:])
        if avg > self.best + self.min_delta:
            self.best, self.since_best = avg, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def state_dict(self) -> dict:
        return {"values": list(self.values), "best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.values = list(state["values"])
        self.best, self.since_best = state["best"], state["since_best"]


def drop_solved(policy, problems: Sequence[Problem], scorer, *, n_samples: int = 8,
                **sampling) -> tuple[list[Problem], list[int]]:
    """Between the stages (METHOD.md 2.4): sample ``n_samples`` hint-free rollouts per problem
    and drop the problems solved n/n. Returns (kept problems, pass counts of all)."""
    from nudgelib.rollouts import evaluate_pass_counts

    counts = evaluate_pass_counts(policy, problems, scorer, n_samples=n_samples, **sampling)
    return [p for p, c in zip(problems, counts) if c < n_samples], counts
