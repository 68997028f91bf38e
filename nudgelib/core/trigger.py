"""NuRL's 0/G trigger: which groups give GRPO nothing (every rollout failed) and, for those
whose problem has a hint, which rows are kept and which are sampled again with the hint.

One implementation, used by every engine: :class:`nudgelib.nudging.NuRL` (nudgelib's trainer)
and the TRL integration (:mod:`nudgelib.integrations.trl`). Pure tensor code; imports torch
only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

KEEP = ("failure", "fresh")


def zero_pass_groups(passed: Tensor, group: Tensor, *, n_groups: int | None = None,
                     already_hinted: Tensor | None = None) -> Tensor:
    """Which groups give GRPO nothing because every rollout failed: a bool per group that is
    True when the group has at least 2 rollouts, none of them passed, and none was already
    sampled with a hint (``already_hinted``, per row). ``passed`` and ``group`` are per row."""
    passed = torch.as_tensor(passed, dtype=torch.bool)
    group = torch.as_tensor(group, dtype=torch.long)
    n = int(group.max()) + 1 if n_groups is None and len(group) else (n_groups or 0)
    passes = torch.zeros(n).index_add_(0, group, passed.float())
    sizes = torch.bincount(group, minlength=n)
    zero = (passes == 0) & (sizes >= 2)
    if already_hinted is not None:
        hinted = torch.zeros(n).index_add_(0, group, torch.as_tensor(already_hinted).float())
        zero &= hinted == 0
    return zero


@dataclass(frozen=True)
class NuRLTrigger:
    """What NuRL's trigger decided for one batch (:func:`nurl_trigger`).

    ``members[k]`` are the rows of the k-th nudged group ``groups[k]``, in row order; its first
    row is the one kept as the group's hint-free member.
    """

    zero_pass: Tensor  # [n_groups] bool: every rollout failed (see zero_pass_groups)
    nudged: Tensor  # [n_groups] bool: zero_pass and the problem has a hint
    groups: list[int]  # the nudged groups, ascending
    members: list[list[int]]  # their rows
    keep: str = "failure"

    @property
    def missing_hint(self) -> Tensor:
        """0/G groups that stay as they are because their problem has no hint."""
        return self.zero_pass & ~self.nudged

    @property
    def kept(self) -> list[int]:
        """The failed rollout each nudged group keeps unchanged (none with ``keep="fresh"``)."""
        return [m[0] for m in self.members] if self.keep == "failure" else []

    @property
    def regenerate(self) -> list[int]:
        """The rows to sample again: G-1 per nudged group (all G with ``keep="fresh"``)."""
        return [r for m in self.members for r in (m[1:] if self.keep == "failure" else m)]

    @property
    def with_hint(self) -> list[bool]:
        """Per row of :attr:`regenerate`: sampled with the hint (False only for the fresh
        hint-free first member of ``keep="fresh"``)."""
        first = {m[0] for m in self.members}
        return [self.keep == "failure" or r not in first for r in self.regenerate]


def nurl_trigger(passed: Tensor, group: Tensor, has_hint: Tensor | Callable[[int], bool], *,
                 n_groups: int | None = None, already_hinted: Tensor | None = None,
                 keep: str = "failure") -> NuRLTrigger:
    """NuRL's trigger (arXiv 2509.25666; docs/method.md §2.2): a group whose rollouts ALL fail,
    and whose problem has a hint, keeps its first rollout (a failure) and has the other G-1
    sampled again with the hint; every other group is left alone.

    Args:
        passed: [N] bool, whether each hint-free rollout passed the verifier.
        group: [N] group index of each row (groups may be in any order and of any size).
        has_hint: [n_groups] bool, whether the group's problem has a hint; or a function
            group -> bool, asked only for the 0/G groups (in ascending order), so a strategy
            looks up hints for the groups that can fire and no others.
        n_groups: the number of groups (needed when ``has_hint`` is a function).
        already_hinted: [N] bool, rows already sampled with a hint (their groups never fire).
        keep: ``"failure"`` keeps the first failed rollout (the paper's reading); ``"fresh"``
            re-samples it too, hint-free (docs/method.md §2.2, an open choice).
    Returns:
        a :class:`NuRLTrigger`: which groups fire, the kept row and the rows to regenerate.
    """
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r}; expected one of {KEEP}")
    group = torch.as_tensor(group, dtype=torch.long)
    if not callable(has_hint):
        has_hint = torch.as_tensor(has_hint, dtype=torch.bool)
        n_groups = len(has_hint)
    elif n_groups is None:
        raise ValueError("nurl_trigger: pass n_groups when has_hint is a function")
    zero = zero_pass_groups(passed, group, n_groups=n_groups, already_hinted=already_hinted)
    if callable(has_hint):
        asked = has_hint
        has_hint = torch.zeros(n_groups, dtype=torch.bool)
        for g in zero.nonzero().flatten().tolist():
            has_hint[g] = bool(asked(g))
    nudged = zero & has_hint
    groups = nudged.nonzero().flatten().tolist()
    members = [(group == g).nonzero().flatten().tolist() for g in groups]
    return NuRLTrigger(zero, nudged, groups, members, keep)
