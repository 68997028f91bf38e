"""The toy family for the tiny character-level transformer: **addition**, ``"37+45="`` ->
``"82"``, with the number of digits as the difficulty knob (:func:`addition_problems`), and
its hints in the transformer's characters (:func:`addition_hint_text`).

A model warm-started on 1- and 2-digit sums has never seen the positions a 3-digit sum needs,
so the hard end starts at 0%. Verified by exact match
(:class:`nudgelib.tasks.rewards.ExactMatchScorer`).
"""

from __future__ import annotations

import random

from nudgelib.tasks.problems import Problem

ADDITION_HINT_TYPES = ("abstract", "partial_steps", "explanation", "answer", "strategy",
                       "strategy_2")
"""The hint types :func:`addition_hint_text` writes (NuRL's four, NudgeRL's two contexts)."""

DIFFICULTY_LEVEL = {"easy": 1, "medium": 2, "hard": 3}
"""``Problem.level`` of each difficulty label, for both toy families."""

ADDITION_DIGITS = DIFFICULTY_LEVEL
"""Digits per operand for each difficulty label: an addition problem's level is its digits."""


def addition_problem(digits: int, rng: random.Random, index: int = 0) -> Problem:
    """One sum of two ``digits``-digit numbers (1-digit operands include 0)."""
    if not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be a positive int, got {digits!r}")
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    a, b = rng.randrange(lo, 10**digits), rng.randrange(lo, 10**digits)
    return Problem(id=f"add{digits}-{index:05d}", question=f"{a}+{b}=", answer=str(a + b),
                   source="toy-addition", level=digits)


def addition_problems(counts: dict[str | int, int], *, seed: int = 0) -> list[Problem]:
    """``counts[difficulty]`` distinct addition problems per difficulty, e.g. {"easy": 20}.

    Difficulty is a label of :data:`ADDITION_DIGITS` or a number of digits.
    """
    rng = random.Random(seed)
    out: list[Problem] = []
    for key, n in counts.items():
        digits = ADDITION_DIGITS.get(key, key)
        if not isinstance(digits, int):
            raise ValueError(f"unknown difficulty {key!r}; expected one of "
                             f"{sorted(ADDITION_DIGITS)} or a number of digits")
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        if n > (10**digits - lo) ** 2:
            raise ValueError(f"counts[{key!r}]={n} exceeds the {(10**digits - lo) ** 2} "
                             f"distinct {digits}-digit problems")
        seen: set[str] = set()
        while len(seen) < n:  # terminates: n <= the number of distinct problems
            p = addition_problem(digits, rng, len(out))
            if p.question in seen:
                continue
            seen.add(p.question)
            out.append(p)
    return out


def _carries(question: str) -> str:
    """``y``/``n`` per column, units first: does the column carry into the next?"""
    a, b = question.rstrip("=").split("+")
    carry, out = 0, ""
    for da, db in zip(a.zfill(len(b))[::-1], b.zfill(len(a))[::-1]):
        carry = (int(da) + int(db) + carry) // 10
        out += "yn"[1 - carry]
    return out


def addition_hint_text(question: str, answer: str, hint_type: str = "abstract") -> str:
    """A hint for ``a+b=`` in the tiny transformer's characters, ``H`` + a cue:

    * ``answer`` -- the sum (``H623``);
    * ``partial_steps`` -- the sum with its last digit hidden (``H62.``);
    * ``abstract`` -- which columns carry, units first, in letters (``Hcyyn`` for 345+278):
      a decomposition the model can learn to use, with no digit of the answer;
    * ``explanation`` -- the carries and one dot per digit of the sum (``Hcyyn...``);
    * ``strategy`` / ``strategy_2`` -- NudgeRL's context from the question alone: ``Hcarry``
      when some column carries, else ``Hplain``.
    """
    if hint_type == "answer":
        return "H" + answer
    if hint_type == "partial_steps":
        return "H" + answer[:len(answer) - 1] + "."
    if hint_type == "abstract":
        return "Hc" + _carries(question)
    if hint_type == "explanation":
        return "Hc" + _carries(question) + "." * len(answer)
    if hint_type in ("strategy", "strategy_2"):
        return "Hcarry" if "y" in _carries(question) else "Hplain"
    raise ValueError(f"hint_type={hint_type!r}; expected one of {ADDITION_HINT_TYPES}")
