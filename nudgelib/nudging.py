"""Nudging strategies: NuRL's 0/G trigger and its siblings behind one interface.

A strategy is the training loop's nudging hook (:mod:`nudgelib.training.step`): everything the loop
calls is declared by the :class:`Nudger` protocol, and the loop hands a strategy a
:class:`SamplingContext` (the policy, the scorer, the sampling settings and the generator),
never the object that runs it. A strategy may sample the whole batch itself
(:meth:`~Nudger.sample`), change the scored batch (:meth:`~Nudger.nudge`), compute the
advantages itself (``sets_advantages``: NudgeRL), and add a term to the loss
(:meth:`~Nudger.auxiliary_loss`).

The 0/G trigger is one function, :func:`nurl_trigger` (with :func:`zero_pass_groups`), used by
:class:`NuRL` here and by the TRL integration (:mod:`nudgelib.integrations.trl`); both read
the one registry :data:`STRATEGIES` (``engines`` says which strategies run on TRL).

=========  ==============================================================================
name       what it does to a step's groups (docs/method.md §2–3)
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
dynamic    no hints: a group whose rewards are all equal (0/G or G/G) is sampled again, all
           G rows, up to ``max_resamples`` times (DAPO's dynamic sampling, arXiv 2503.14476)
prefix     the leading fraction of the worked solution as the prompt's hint, on every prompt
           (or NuRL-style on 0/G groups), the fraction annealed to 0 (QuestA, arXiv 2507.13266)
=========  ==============================================================================

``condition_on`` (nurl, scaf): ``"hinted"`` scores a hinted rollout under the prompt it was
sampled from (on-policy; Scaf-GRPO's choice, nudgelib's default); ``"original"`` scores it under
the plain question while its sampling log-probs stay those of the hinted prompt, so the PPO
ratio is pi(y | q) / pi_old(y | q, hint) — the off-policy variant Scaf-GRPO measured as worse.

Hints are only ever used for training rollouts: evaluation (:func:`nudgelib.rollouts.
evaluate_pass_counts`) has no hint argument at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from nudgelib.core.advantages import group_stats, nudgerl_advantages
from nudgelib.core.trigger import KEEP, nurl_trigger, zero_pass_groups
from nudgelib.hints.bank import CONTEXT_TYPES, as_hint_source
from nudgelib.hints.prefix import linear_anneal, solution_prefix
from nudgelib.policies.base import left_pad
from nudgelib.rollouts import ContextRows, RolloutBatch, trim_padding
from nudgelib.sampling import SamplingContext
from nudgelib.tasks.problems import Problem

CONDITION_ON = ("hinted", "original")

# ----------------------------------------------------------------------------- interface

@runtime_checkable
class Nudger(Protocol):
    """Everything the training loop (:mod:`nudgelib.training.step`) asks of a nudging strategy.

    Per step, in stage 2 (nudging on; :func:`nudgelib.training.step.train_step`):
    ``batch = sample(problems, ctx)`` (None: the step samples G plain rollouts per problem),
    the step records the hint-free metrics, then ``batch = nudge(batch, ctx)``; the
    advantages are ``advantages(batch)`` when ``sets_advantages``, else the config's
    estimator's; for every micro-batch ``auxiliary_loss`` may add a term.
    ``state_dict``/``load_state_dict`` go into checkpoints; ``use_hints`` attaches hints of
    ``hint_types`` (e.g. self-hints generated before training); ``totals`` holds the running
    counts the training loop logs (``missing_hints``: 0/G groups whose problem had no hint).
    """

    name: str
    hint_types: tuple[str, ...]
    sets_advantages: bool
    totals: dict

    def use_hints(self, hints) -> None: ...

    def sample(self, problems: Sequence[Problem], ctx: SamplingContext) -> RolloutBatch | None: ...

    def nudge(self, batch: RolloutBatch, ctx: SamplingContext) -> RolloutBatch: ...

    def advantages(self, batch: RolloutBatch) -> Tensor: ...

    def auxiliary_loss(self, policy, batch: RolloutBatch, rows: Tensor, advantages: Tensor, *,
                       temperature: float = 1.0) -> Tensor | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# ----------------------------------------------------------------------------- base

class NudgingStrategy:
    """Base class, and the ``"none"`` strategy: no nudging. Implements :class:`Nudger`;
    subclasses override :meth:`augment` (change a scored batch) and/or :meth:`sample`.

    ``engines`` names where the strategy runs: ``"nudgelib"`` (:mod:`nudgelib.training.step`) and
    ``"trl"`` (TRL's GRPO loop, :mod:`nudgelib.integrations.trl`).
    """

    name: ClassVar[str] = "none"
    title: ClassVar[str] = "no nudging"
    sets_advantages: ClassVar[bool] = False
    engines: ClassVar[tuple[str, ...]] = ("nudgelib", "trl")

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

    def advantages(self, batch: RolloutBatch) -> Tensor:
        """The strategy's own advantages (asked only when ``sets_advantages``)."""
        raise NotImplementedError(f"nudging strategy {self.name!r} does not set advantages")

    def auxiliary_loss(self, policy, batch: RolloutBatch, rows: Tensor, advantages: Tensor, *,
                       temperature: float = 1.0) -> Tensor | None:
        """An extra loss term for the micro-batch ``rows`` (already normalised over the batch)."""
        return None

    def nudge(self, batch: RolloutBatch, ctx: SamplingContext) -> RolloutBatch:
        """:meth:`augment`, then record in ``batch.nudge`` which groups carry hinted rows
        (``nudged_groups``, ``frac_nudged``) and add to the running totals."""
        batch = self.augment(batch, ctx)
        hinted = batch.hinted
        nudged = torch.zeros(batch.n_groups).index_add_(0, batch.group, hinted.float()) > 0
        batch.nudge.frac_nudged = float(nudged.float().mean()) if batch.n_groups else 0.0
        batch.nudge.nudged_groups = nudged.nonzero().flatten().tolist()
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


def _condition_on_original(batch: RolloutBatch, pairs: Sequence[tuple[int, int]]) -> None:
    """Make each hinted row ``r`` of (r, plain_row) pairs score under ``plain_row``'s prompt."""
    for r, plain in pairs:
        batch.prompt_ids[r] = batch.prompt_ids[plain]
        batch.prompt_mask[r] = batch.prompt_mask[plain]
    batch.nudge.conditioned_on_original.extend(r for r, _ in pairs)


# ----------------------------------------------------------------------------- NuRL

class NuRL(NudgingStrategy):
    """NuRL (docs/method.md §2.2): a 0/G group keeps one failed rollout and has the other G-1
    regenerated with the hint (:func:`nurl_trigger`).

    ``keep="failure"`` keeps the first failed rollout unchanged (the paper's reading);
    ``keep="fresh"`` replaces it with a fresh hint-free sample (an open choice, §2.2).
    """

    name = "nurl"
    title = "NuRL"

    def __init__(self, hints=None, *, hint_type: str = "abstract", condition_on: str = "hinted",
                 keep: str = "failure"):
        super().__init__(hints, hint_type=hint_type, condition_on=condition_on)
        if keep not in KEEP:
            raise ValueError(f"keep={keep!r}; expected one of {KEEP}")
        self.keep = keep

    def augment(self, batch, ctx):
        hints: dict[int, str | None] = {}

        def has_hint(g: int) -> bool:  # asked for the 0/G groups only
            hints[g] = self.hint_for(batch.problems[g])
            return hints[g] is not None

        plan = nurl_trigger(batch.correct, batch.group, has_hint, n_groups=batch.n_groups,
                            already_hinted=batch.hinted, keep=self.keep)
        self.totals["missing_hints"] += int(plan.missing_hint.sum())
        if not plan.groups:
            return batch
        rows = plan.regenerate
        groups = [int(batch.group[r]) for r in rows]
        new = ctx.sample_rows([batch.problems[g] for g in groups], groups,
                              [hints[g] if h else None for g, h in zip(groups, plan.with_hint)],
                              batch.problems, resample=True)  # keep="fresh": a plain redraw
        batch.replace_rows(rows, new)
        if self.condition_on == "original":
            _condition_on_original(batch, [(r, m[0]) for m in plan.members for r in m[1:]])
        return batch


# ----------------------------------------------------------------------------- Scaf-GRPO

SCAF_TIERS = ("abstract", "partial_steps", "explanation")
"""Scaf-GRPO's Knowledge -> Planning -> Solution tiers, as hint types of a bank."""


class ScafGRPO(NudgingStrategy):
    """Scaf-GRPO's tiered scaffolding (docs/method.md §3): replace ONE failure with the success
    under the least (cumulative) hint that works.

    For each 0/G group, tier k's hint is the texts of ``tiers[:k+1]`` joined by a blank line
    (``combine="join"``), or tier k's text alone (``combine="last"``, for hints that already
    contain the lower tiers, like the toy hints); ``tries_per_tier`` rollouts are sampled per
    tier until one is correct.

    Warm-up (the paper: plain GRPO for the first 15 % of steps): ``warmup_fraction`` of
    ``total_steps`` training steps sample no hints at all; from step
    ``round(warmup_fraction * total_steps) + 1`` on, the tiers are tried. The default 0 hints
    from the first step (nudgelib's earlier behaviour); ``warmup_fraction=0.15`` with the run's
    length is the paper's setting.
    """

    name = "scaf"
    title = "Scaf-GRPO"
    engines = ("nudgelib",)

    def __init__(self, hints=None, *, tiers: Sequence[str] = SCAF_TIERS,
                 tries_per_tier: int = 2, condition_on: str = "hinted",
                 combine: str = "join", warmup_fraction: float = 0.0,
                 total_steps: int | None = None):
        super().__init__(hints, hint_type=tiers[0] if tiers else "abstract",
                         condition_on=condition_on)
        if not isinstance(warmup_fraction, (int, float)) or not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be a share in [0, 1), got "
                             f"{warmup_fraction!r}")
        if warmup_fraction and (not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"warmup_fraction={warmup_fraction} needs total_steps (the run's "
                             f"number of training steps, a positive integer), got "
                             f"{total_steps!r}")
        self.warmup_steps = round(warmup_fraction * total_steps) if warmup_fraction else 0
        if combine not in ("join", "last"):
            raise ValueError(f"combine={combine!r}; expected 'join' or 'last'")
        self.combine = combine
        if not tiers:
            raise ValueError("ScafGRPO needs at least one hint tier")
        if not isinstance(tries_per_tier, int) or tries_per_tier < 1:
            raise ValueError(f"tries_per_tier must be an integer >= 1, got {tries_per_tier!r}")
        self.tiers, self.tries = tuple(tiers), tries_per_tier
        self.hint_types = self.tiers
        self.totals.update(tried_groups=0, warmup_steps_skipped=0,
                           **{f"solved_at_tier_{k + 1}": 0
                                              for k in range(len(self.tiers))})

    def cumulative_hint(self, problem: Problem, tier: int) -> str | None:
        parts = [self.hint_for(problem, t) for t in self.tiers[:tier + 1]]
        parts = [p for p in parts if p]
        if not parts:
            return None
        return "\n\n".join(parts) if self.combine == "join" else parts[-1]

    def augment(self, batch, ctx):
        if self.warmup_steps and ctx.step <= self.warmup_steps:  # warm-up: plain GRPO
            self.totals["warmup_steps_skipped"] += 1
            return batch
        pending = zero_pass_groups(batch.correct, batch.group, n_groups=batch.n_groups,
                                   already_hinted=batch.hinted).nonzero().flatten().tolist()
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
        batch.nudge.scaf_tier = {g: k + 1 for g, (_, _, k) in winners.items()}
        return batch


# ----------------------------------------------------------------------------- always

class AlwaysHint(NudgingStrategy):
    """Every prompt sampled with its hint, all G rollouts (docs/method.md §2.6, "hints always")."""

    name = "always"
    title = "hints always"

    def sample(self, problems, ctx):
        return ctx.collect(problems, [self.hint_for(p) for p in problems])


# ----------------------------------------------------------------------------- NudgeRL

class NudgeRL(NudgingStrategy):
    """NudgeRL (docs/method.md §3): strategy contexts on every prompt, context dropout, the
    inter/intra-context advantage and the distillation term on the context-free prompt.

    Contexts are the bank's hints of ``context_types``, by default the answer-free strategy
    keywords of :data:`nudgelib.hints.bank.CONTEXT_TYPES`, written from the problem alone (the
    policy's own, ``generate_hints(policy, problems, "strategy")``; hand-written for the toys,
    :func:`nudgelib.toy.toy_hint`), as the paper does: it never shows the gold answer or a
    solution. A problem with fewer contexts than ``n_contexts`` reuses the ones it has; one
    with none is sampled plainly (counted as ``missing_hints``). NuRL's answer-conditioned
    hints can still be asked for (``context_types=("abstract", "partial_steps")``), which is
    then a different method with privileged contexts.

    Normalisation: after the inter/intra decomposition the advantages are standardised per
    problem over all its rollouts with the population std and eps 1e-5, as NudgeRL's reference
    code does (read from its description; the paper's text alone does not say which std).
    """

    name = "nudgerl"
    title = "NudgeRL"
    sets_advantages = True  # the inter/intra-context advantage, set when sampling
    engines = ("nudgelib",)

    def __init__(self, hints=None, *, context_types: Sequence[str] = CONTEXT_TYPES,
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
        plain = ctx.policy.encode_prompts([p.question for p in rows_p])
        ids, mask = left_pad(plain, ctx.policy.pad_id)
        batch.contexts = ContextRows(context=context, plain_prompt_ids=ids, plain_prompt_mask=mask)
        return batch

    def advantages(self, batch):
        """The inter/intra-context advantage of the rows :meth:`sample` drew."""
        if batch.contexts is None:
            raise ValueError("NudgeRL.advantages needs a batch NudgeRL.sample drew (no contexts)")
        return nudgerl_advantages(batch.rewards, batch.group, batch.contexts.context,
                                  lam=self.lam)

    def auxiliary_loss(self, policy, batch, rows, advantages, *, temperature=1.0):
        """-distill_coef * sum_i A_i * mean_t log pi(o_it | q without context) / N_context,
        over the context rollouts among ``rows`` (N_context: all context rows of the batch)."""
        cr = batch.contexts
        if self.distill_coef == 0 or cr is None:
            return None
        sel = rows[cr.context[rows] >= 0]
        if len(sel) == 0:
            return None
        dev = policy.device
        args = [t.to(dev) for t in trim_padding(
            cr.plain_prompt_ids[sel], cr.plain_prompt_mask[sel],
            batch.completion_ids[sel], batch.completion_mask[sel])]
        cm = args[3]
        logp = policy.logprobs(*args, temperature=temperature)
        per_seq = (logp * cm).sum(-1) / cm.sum(-1).clamp(min=1)
        adv = advantages[sel].to(dev)
        return -self.distill_coef * (adv * per_seq).sum() / max(1, cr.n_context_rows)


# ----------------------------------------------------------------------------- dynamic sampling

class DynamicSampling(NudgingStrategy):
    """DAPO's dynamic sampling (arXiv 2503.14476), per group, no hints: a group whose rewards
    are all equal (0/G or G/G) is drawn again, all G rows, up to ``max_resamples`` times; every
    redrawn row is booked as resampled and counted in ``totals`` (``rescued_groups``: flat
    groups that came back with a spread). DAPO itself over-samples prompts (docs/method.md §10).
    """

    name = "dynamic"
    title = "dynamic sampling (DAPO)"
    engines = ("nudgelib",)

    def __init__(self, hints=None, *, max_resamples: int = 2, hint_type: str = "abstract",
                 condition_on: str = "hinted"):
        super().__init__(None, hint_type=hint_type, condition_on=condition_on)
        if isinstance(max_resamples, bool) or not isinstance(max_resamples, int) or max_resamples < 0:
            raise ValueError(f"max_resamples={max_resamples!r}; expected an integer >= 0")
        self.max_resamples = max_resamples
        self.hint_types = ()  # no hints
        self.totals.update(resampled_groups=0, resampled_rows=0, rescued_groups=0)

    def use_hints(self, hints) -> None:  # no hints: any given are ignored
        pass

    @staticmethod
    def flat_groups(batch: RolloutBatch) -> list[int]:
        """The groups whose rewards are all equal (0/G, G/G, or any constant reward)."""
        st = group_stats(batch.rewards, batch.group)  # std exactly 0 for an all-equal group
        return sorted(set(batch.group[st.std == 0].tolist()))

    def augment(self, batch, ctx):
        flat_before = set(self.flat_groups(batch))
        for _ in range(self.max_resamples):
            flat = self.flat_groups(batch)
            if not flat:
                break
            rows = [r for g in flat for r in batch.group_rows(g)]
            groups = [int(batch.group[r]) for r in rows]
            new = ctx.sample_rows([batch.problems[g] for g in groups], groups, [None] * len(rows),
                                  batch.problems, resample=True)
            batch.replace_rows(rows, new)
            self.totals["resampled_groups"] += len(flat)
            self.totals["resampled_rows"] += len(rows)
        self.totals["rescued_groups"] += len(flat_before - set(self.flat_groups(batch)))
        return batch


# ----------------------------------------------------------------------------- prefix hints

class PrefixHints(NudgingStrategy):
    """Prefix hints with annealing, after QuestA (arXiv 2507.13266): the leading fraction of the
    worked solution as the prompt's hint, shrinking to 0 (:func:`linear_anneal` over the
    strategy's own steps: a run forked into it starts at ``start``). ``apply="all"`` (QuestA)
    prefixes every prompt; ``apply="zero_pass"`` regenerates G-1 rows of each 0/G group, like
    NuRL. The prefix is in the prompt, so the given steps are never trained as the policy's own.
    """

    name = "prefix"
    title = "prefix hints, annealed"
    engines = ("nudgelib",)

    def __init__(self, hints=None, *, start: float = 0.5, anneal_steps: int = 50,
                 apply: str = "all", hint_type: str = "prefix", condition_on: str = "hinted"):
        super().__init__(None, hint_type=hint_type, condition_on="hinted")
        if condition_on != "hinted":
            raise ValueError("condition_on='original' would train a continuation of a prefix the "
                             "prompt no longer holds; prefix hints use condition_on='hinted'")
        if not 0.0 <= float(start) <= 1.0:
            raise ValueError(f"start={start!r}; expected a fraction in [0, 1]")
        if isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or anneal_steps < 0:
            raise ValueError(f"anneal_steps={anneal_steps!r}; expected an integer >= 0")
        if apply not in ("all", "zero_pass"):
            raise ValueError(f"apply={apply!r}; expected 'all' or 'zero_pass'")
        self.start, self.anneal_steps, self.apply = float(start), anneal_steps, apply
        self.hint_types = ()  # the hints come from the problems' worked solutions
        self.fraction, self.steps_done = self.start, 0
        self._nurl = NuRL(self._prefix_for)

    def use_hints(self, hints) -> None:  # the worked solutions are the hints: any given are ignored
        pass

    def _prefix_for(self, problem: Problem, hint_type: str | None = None) -> str | None:
        return solution_prefix(problem, self.fraction)

    def sample(self, problems, ctx):
        # the schedule counts this strategy's own steps: a run forked from a GRPO checkpoint
        # (stage 2 starting at step 21, say) still starts at ``start``
        self.steps_done += 1
        self.fraction = linear_anneal(self.steps_done, self.start, self.anneal_steps)
        if self.apply != "all" or self.fraction <= 0:
            return None
        hints = [self._prefix_for(p) for p in problems]
        return ctx.collect(problems, hints) if any(h is not None for h in hints) else None

    def augment(self, batch, ctx):
        if self.apply == "zero_pass" and self.fraction > 0:
            batch = self._nurl.augment(batch, ctx)
            self.totals["missing_hints"] = self._nurl.totals["missing_hints"]
        return batch

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fraction": self.fraction, "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fraction = state.get("fraction", self.fraction)
        self.steps_done = state.get("steps_done", self.steps_done)


# ----------------------------------------------------------------------------- registry

STRATEGIES = {"none": NudgingStrategy, "nurl": NuRL, "scaf": ScafGRPO, "nudgerl": NudgeRL,
              "always": AlwaysHint, "dynamic": DynamicSampling, "prefix": PrefixHints}
"""Strategy classes by the names of the CLI's ``--nudging``; each class's ``engines`` says
whether it also runs inside TRL's GRPO loop (:mod:`nudgelib.integrations.trl`)."""


def strategies_for(engine: str) -> tuple[str, ...]:
    """The names of the strategies that run on ``engine`` (``"nudgelib"`` or ``"trl"``)."""
    return tuple(n for n, cls in STRATEGIES.items() if engine in cls.engines)


def warn_if_no_hints(nudger, problems: Sequence[Problem]) -> int:
    """How many of ``problems`` have a hint of every type the strategy asks for; a warning
    when none has (e.g. a bank made for other problems: nothing could ever be nudged), the
    count on stdout when some lack one (often by design: only hard problems may have hints).
    The per-step metric ``missing_hints`` counts the 0/G groups that found none."""
    if not hasattr(nudger, "hint_for"):
        return len(problems)
    covered = sum(all(nudger.hint_for(p, t) is not None for t in nudger.hint_types)
                  for p in problems)
    kinds = "/".join(nudger.hint_types)
    if problems and not covered:
        warnings.warn(f"none of the {len(problems)} training problems has a {kinds} hint: "
                      f"{nudger.name} can nudge no group", stacklevel=3)
    elif covered < len(problems):  # said once, on stdout: it is often by design
        print(f"{nudger.name}: {covered} of {len(problems)} training problems have a {kinds} "
              f"hint; 0/G groups of the others are counted per step as missing_hints")
    return covered


def make_strategy(name: str, hints=None, **options) -> NudgingStrategy:
    """``STRATEGIES[name](hints, **options)`` with an error that names what is wrong."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown nudging strategy {name!r}; expected one of "
                         f"{sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](hints, **options)
    except TypeError as err:
        raise ValueError(f"nudging strategy {name!r}: bad option ({err})") from None
