"""Prefix hints (QuestA, arXiv 2507.13266; docs/method.md §10): the leading fraction of a
problem's worked solution, given as a hint, and the schedule that shrinks the fraction to 0.
:class:`nudgelib.nudging.PrefixHints` samples with them."""

from __future__ import annotations

from nudgelib.tasks.problems import Problem


def worked_steps(problem: Problem, n_answers: int = 10) -> list[str]:
    """A problem's worked solution as steps: its lines when it has several, else its words.
    The table toy's solution is its elimination order: every wrong answer, ruled out one by
    one in a fixed order seeded by the problem (``not 4``, ``not 1``, ...), of ``n_answers`` as
    in :func:`nudgelib.toy.toy_table_hint`."""
    if problem.source == "toy-table":
        import random

        a = int(problem.answer)
        wrong = [k for k in range(n_answers) if k != a]
        random.Random(f"{problem.id}/solution").shuffle(wrong)
        return [str(k) for k in wrong]
    text = (problem.solution or "").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines if len(lines) > 1 else text.split()


def solution_prefix(problem: Problem, fraction: float) -> str | None:
    """The leading ``floor(fraction x n)`` of the problem's ``n`` worked steps as hint text
    (None when that is no step, or the problem has no worked solution). The last step is never
    given: it states the answer."""
    steps = worked_steps(problem)
    k = min(int(fraction * len(steps) + 1e-9), len(steps) - 1)
    if k <= 0:
        return None
    if problem.source == "toy-table":
        return "not " + " ".join(steps[:k])
    joiner = "\n" if "\n" in (problem.solution or "").strip() else " "
    return joiner.join(steps[:k])


def linear_anneal(step: int, start: float, anneal_steps: int) -> float:
    """The prefix fraction at training step ``step`` (1-based): ``start`` at step 1, falling
    linearly to 0 at step ``anneal_steps + 1`` and 0 after."""
    if anneal_steps <= 0:
        return 0.0
    return start * max(0.0, 1.0 - (step - 1) / anneal_steps)
