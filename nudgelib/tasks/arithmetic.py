"""Short-answer arithmetic: a task family with a difficulty dial for a small real model on CPU.

GSM8K needs chains of thought that a 135M model cannot write, so on CPU nothing would ever be
rewarded. Asked "What is 7 + 5?" and told "Answer with the final number only.", the same model
(SmolLM2-135M-Instruct) is right a few times in 8 on one-digit sums and products and almost
never on sums of three numbers: a graded pass-rate distribution with a large 0/G tail, which is
NuRL's premise (docs/method.md §1, §5.1), at seconds per RL step.

    train = arithmetic_problems({"sum": 24, "product": 24, "chain": 32}, split="train", seed=0)
    test = arithmetic_problems({"chain": 24}, split="heldout", seed=0)
    bank = reference_hints(train, "partial_steps")   # teacher hints: the first line of
                                                     # the worked solution (chain tier only)

* **Tiers** (:data:`TIERS`): ``sum`` (a + b, one digit), ``product`` (a * b, 2-9), ``sum21``
  (a two-digit plus a one-digit number), ``chain`` (a + b + c, one digit each), ``sum2`` (two
  two-digit numbers). The first three are the CPU presets' default: the base model's pass
  rates measured in ``data/results/lm_nurl.json`` go from learnable (sum, product) to 0/G for
  most problems (chain).
* **Held-out by construction**: every problem of a tier is enumerated and its operand
  *multiset* is assigned to ``train`` or ``heldout`` by a fixed, seed-free draw, so ``3 + 4``
  and ``4 + 3`` are always on the same side and no held-out question is a reordering of a
  training one. The run seed only chooses which problems of a split are used.
* **Scoring**: the shared verifier (:mod:`nudgelib.tasks.verify`) with the short-answer rule
  (:data:`SCORING`: a ``\\boxed{}`` answer, else the last number on the first non-empty line).
  Operands are at least 1 (at least 2 in products), so a completion that only echoes the
  question ("3 + 4 + 5") ends in a number smaller than the answer and is never rewarded.
* **Hints** come from each problem's worked ``solution``: for the chain tier its first line,
  "3 + 4 = 7, so the question is 7 + 5.", is a decomposition that stops short of the answer
  (the model still has to add); one-line solutions give no partial-step hint, so only the hard
  tier is nudged. :func:`nudgelib.hints.generate.reference_hints` turns them into a leak-checked bank.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nudgelib.tasks.problems import Problem

SOURCE = "arithmetic"
INSTRUCTION = "Answer with the final number only."
"""The CPU presets' instruction: the model's hint-free pass rate is graded under it."""
SCORING = ("boxed", "short")
"""Extraction strategies of the verifier for this task (:func:`nudgelib.tasks.verify.extract_answer`)."""
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Tier:
    """Questions ``op.join(operands)`` with ``n_operands`` operands drawn from [lo, hi]."""

    op: str
    n_operands: int
    lo: int
    hi: int
    level: int

    def problems(self) -> list[tuple[int, ...]]:
        return list(itertools.product(range(self.lo, self.hi + 1), repeat=self.n_operands))

    def answer(self, xs: tuple[int, ...]) -> int:
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.op == "*" else out + x
        return out


TIERS: dict[str, Tier] = {
    "sum": Tier("+", 2, 1, 9, 1),
    "product": Tier("*", 2, 2, 9, 2),
    "sum21": Tier("+", 2, 1, 99, 3),  # filtered to a two-digit plus a one-digit number below
    "chain": Tier("+", 3, 1, 9, 4),
    "sum2": Tier("+", 2, 10, 99, 5),
}
"""Named tiers, easiest first (``Problem.level`` = the tier's level)."""
DEFAULT_TIERS = ("sum", "product", "chain")
HARD_TIERS = ("chain",)
"""Tiers of the default set whose problems are mostly 0/G for the base model (measured)."""

HELDOUT_SHARE = 0.5


def _operands(name: str) -> list[tuple[int, ...]]:
    tier = TIERS[name]
    xs = tier.problems()
    if name == "sum21":
        xs = [x for x in xs if x[0] >= 10 and x[1] <= 9]
    return xs


def split_of(name: str, xs: tuple[int, ...]) -> str:
    """``train`` or ``heldout`` for a problem: fixed by its tier and operand multiset only."""
    key = f"{name}:{','.join(map(str, sorted(xs)))}"
    return "heldout" if random.Random(key).random() < HELDOUT_SHARE else "train"


def make_problem(name: str, xs: tuple[int, ...]) -> Problem:
    tier = TIERS[name]
    op = f" {tier.op} "
    answer = tier.answer(xs)
    lines = []
    if len(xs) > 2:  # a decomposition: combine the first two, restate what is left
        first = tier.answer(xs[:2])
        rest = op.join(map(str, (first, *xs[2:])))
        lines.append(f"{xs[0]}{op}{xs[1]} = {first}, so the question is {rest}.")
        lines.append(f"{rest} = {answer}")
    else:
        lines.append(f"{op.join(map(str, xs))} = {answer}")
    return Problem(id=f"{SOURCE}/{name}/{'_'.join(map(str, xs))}",
                   question=f"What is {op.join(map(str, xs))}?", answer=str(answer),
                   solution="\n".join(lines), source=SOURCE, level=tier.level, subject=name)


def split_pool(name: str, split: str) -> list[Problem]:
    """Every problem of tier ``name`` in ``split``, in enumeration order."""
    if name not in TIERS:
        raise ValueError(f"unknown arithmetic tier {name!r}; expected one of {list(TIERS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [make_problem(name, xs) for xs in _operands(name) if split_of(name, xs) == split]


def arithmetic_problems(counts: Mapping[str, int], *, split: str = "train",
                        seed: int = 0) -> list[Problem]:
    """``counts[tier]`` distinct problems of each tier from ``split``, drawn by ``seed``.

    The split is fixed by construction (:func:`split_of`); a count larger than the split's pool
    is an error naming the tier and the pool size.
    """
    out: list[Problem] = []
    for name, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"counts[{name!r}]={n!r}; expected an integer >= 0")
        if not n:
            continue
        pool = split_pool(name, split)
        if n > len(pool):
            raise ValueError(f"counts[{name!r}]={n} exceeds the {len(pool)} {split} problems "
                             f"of tier {name!r}")
        rng = random.Random(f"{seed}:{name}:{split}")
        out += rng.sample(pool, n)
    return out


def tier_of(problem: Problem) -> str:
    """The tier name of an arithmetic problem."""
    if problem.source != SOURCE or problem.subject not in TIERS:
        raise ValueError(f"problem {problem.id!r} is not an arithmetic problem")
    return problem.subject


# ----------------------------------------------------------------------------- answer shapes

ANSWER_SHAPES = ("number", "one_step", "several_steps", "other")
"""How a completion's first line states its answer: a bare number (``17``), one written step
(``9 + 8 = 17``), several steps (``3 + 6 + 8 = 17``, ``3 + 6 = 9, 9 + 8 = 17``) or anything
else. A hinted success copied from a partial-step hint has the one-step shape; a learned
decomposition shows as several steps on hint-free prompts."""

_NUMBER_LINE = re.compile(r"\s*-?\d+(?:\.\d+)?\s*\.?\s*")
_OPERATOR = re.compile(r"(?<=[\d\s)])[-+*/×x](?=[\s\d(])")


def answer_shape(text: str) -> str:
    """The :data:`ANSWER_SHAPES` label of a completion, read from its first non-empty line
    (bounded: at most 200 characters are looked at)."""
    line = next((ln for ln in text[:200].splitlines() if ln.strip()), "")
    if _NUMBER_LINE.fullmatch(line):
        return "number"
    if "=" not in line:
        return "other"
    ops = len(_OPERATOR.findall(line))
    steps = max(line.count("="), 1)
    if ops == 1 and steps == 1:
        return "one_step"
    return "several_steps" if ops >= 2 else "other"


def answer_shape_shares(texts) -> dict[str, float]:
    """``format_<shape>``: the share of ``texts`` of each answer shape (empty: no keys)."""
    texts = list(texts)
    if not texts:
        return {}
    shapes = [answer_shape(t) for t in texts]
    return {f"format_{s}": shapes.count(s) / len(shapes) for s in ANSWER_SHAPES}
