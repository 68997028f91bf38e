"""The course's exercises, checked: one per notebook 01-08.

A notebook's exercise cell defines the learner's answer (``None`` until they write it) and calls
:func:`check`, which says "not attempted yet" for ``None``, and otherwise checks the answer
against values computed independently of it (a brute-force search, the library's estimator on
groups built for the purpose, the verifier) and says what is wrong in a sentence. Solutions live
in ``notebooks/solutions/``, one small notebook per exercise, and CI runs them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from nudgelib.core.advantages import compute_advantages
from nudgelib.core.stats import t_quantile
from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks.verify import verify

SOLUTIONS = "notebooks/solutions"


class ExerciseError(AssertionError):
    """An answer that does not do what the exercise asks (the message says what)."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ExerciseError(message)


def naive_reward(gold: str, completion: str) -> float:
    """Exercise 01's naive reward: 1 if the gold answer's text appears anywhere."""
    return float(gold in completion)


def _check_01(answer) -> str:
    gold, fooled, missed = answer
    _need(len(fooled) >= 2 and len(missed) >= 2, "write at least two completions in each list")
    for c in fooled:
        _need(naive_reward(gold, c) == 1.0, f"the naive reward does not pay for {c!r}")
        _need(not verify(gold, c).correct, f"{c!r} is correct by the verifier: it does not fool "
                                           f"anything")
    for c in missed:
        _need(verify(gold, c).correct, f"the verifier says {c!r} is wrong: "
                                       f"{verify(gold, c).reason}")
        _need(naive_reward(gold, c) == 0.0, f"the naive reward already pays for {c!r}")
    return (f"{len(fooled)} completions fool the naive reward and {len(missed)} right answers "
            f"escape it; the verifier gets all {len(fooled) + len(missed)} right")


def learnable_share(p: float, g: int) -> float:
    """P(a group of g samples at pass rate p has a success and a failure)."""
    return 1 - (1 - p) ** g - p ** g


def _check_02(fn: Callable[[float, float], int]) -> str:
    cases = [(0.5, 0.9), (0.1, 0.5), (0.02, 0.5), (0.001, 0.5), (0.3, 0.99)]
    for p, share in cases:
        want = next(g for g in range(2, 10**6) if learnable_share(p, g) >= share)
        got = fn(p, share)
        _need(got == want, f"group_size_needed({p}, {share}) = {got}; the smallest G whose "
                           f"groups carry a learning signal at least {share:.0%} of the time "
                           f"is {want}")
    return ("right for every case: a problem at pass rate 0.001 needs G = "
            f"{fn(0.001, 0.5)} samples for half its groups to teach anything")


def _check_03(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    groups = [[1.0] + [0.0] * 7, [1.0] * 4 + [0.0] * 4, [0.0] * 8, [0.2, 0.9, 0.4, 0.4, 1.0]]
    for r in groups:
        rewards = torch.tensor(r)
        want = compute_advantages(rewards, torch.zeros(len(r), dtype=torch.long), "rloo")
        got = torch.as_tensor(fn(rewards), dtype=torch.float32)
        _need(got.shape == want.shape and torch.allclose(got, want, atol=1e-5),
              f"rewards {r}: yours {[round(x, 4) for x in got.tolist()]}, RLOO's "
              f"{[round(x, 4) for x in want.tolist()]}")
    return "your leave-one-out baseline equals compute_advantages(..., 'rloo') on four groups"


def _check_04(fn: Callable[[int, int], float]) -> str:
    for g in (4, 8, 16):
        for k in range(g):
            rewards = torch.tensor([0.0] + [1.0] * k + [0.0] * (g - 1 - k))
            want = float(compute_advantages(rewards, torch.zeros(g, dtype=torch.long),
                                            "grpo")[0])
            got = fn(k, g)
            _need(got is not None and math.isclose(float(got), want, abs_tol=1e-4),
                  f"kept_failure_advantage({k}, {g}) = {got}; the library gives {want:.4f}")
    worst = min(range(8), key=lambda k: fn(k, 8))
    return (f"right for G = 4, 8, 16 and every k; at G = 8 the kept failure is pushed down "
            f"hardest when k = {worst} hinted rows succeed ({fn(worst, 8):.3f})")


def _check_05(answer) -> str:
    question, gold, hint = answer
    _need(bool(hint and hint.strip()), "write a hint")
    _need(not hint_leaks_answer(hint, gold), f"the leak check flags {hint!r}: it finds {gold} "
                                             f"in it")
    return (f"the leak check passes {hint!r} for {question!r}. Now ask a reader: do they know "
            f"the answer ({gold}) from the hint alone? If yes, you found what no automatic "
            f"check finds; that is why NuRL's hints are also read by people")


def _check_06(answer) -> str:
    fn, rows, group_size, prompts_per_step = answer
    rows = [r for r in rows if r.get("frac_nudged") is not None]
    _need(bool(rows), "no logged steps with a nudging column")
    for r in rows:
        got = fn(r["frac_nudged"], group_size, prompts_per_step)
        _need(got == r["rows_resampled"],
              f"step {r['step']}: you predict {got} regenerated rows, the run logged "
              f"{r['rows_resampled']} (frac_nudged {r['frac_nudged']:.3f})")
    return f"your prediction equals the logged rows_resampled at all {len(rows)} steps"


@functools.cache
def _t(q: float, df: int) -> float:
    return t_quantile(q, df)


def _check_07(fn: Callable[[float, float], int]) -> str:
    for sd, effect in ((0.05, 0.06), (0.02, 0.06), (0.1, 0.06), (0.03, 0.02)):
        want = next(n for n in range(2, 10**4)
                    if (_t(0.975, n - 1) + _t(0.80, n - 1)) * sd / math.sqrt(n) <= effect)
        got = fn(sd, effect)
        _need(got == want, f"seeds_needed({sd}, {effect}) = {got}; the smallest number of "
                           f"seeds whose MDE is at most {effect} is {want}")
    return (f"right: with a seed-to-seed spread of 0.05, seeing +0.06 needs "
            f"{fn(0.05, 0.06)} seeds")


def _check_08(fn: Callable[[float, float, float], float]) -> str:
    cases = (((200_000, 100_000, 0.05), 20_000.0),  # 100k more tokens for 5 points
             ((137_665, 107_692, 0.077), (137_665 - 107_692) / 7.7),
             ((107_915, 107_692, 0.0), math.inf),  # no gain: no price buys it
             ((90_000, 100_000, 0.02), 0.0),  # cheaper than the control: nothing extra paid
             ((250_000, 100_000, -0.01), math.inf))
    for args, want in cases:
        got = fn(*args)
        _need(got is not None and (got == want or (math.isfinite(want) and abs(got - want) < 1e-6 * max(1, want))),
              f"tokens_per_point{args} = {got}; expected {want} (extra tokens over the control, never "
              f"below 0, per point = 0.01 of gain; infinite when the gain is not positive)")
    return "right: an exit's price is its extra tokens per point of hint-free gain"


CHECKS = {"01": _check_01, "02": _check_02, "03": _check_03, "04": _check_04, "05": _check_05,
          "06": _check_06, "07": _check_07, "08": _check_08}


PROBES = {"02": (0.5, 0.9), "03": (torch.tensor([1.0, 0.0]),), "04": (1, 8), "06": (0.5, 8, 4),
          "07": (0.05, 0.06), "08": (200_000, 100_000, 0.05)}
"""Arguments a learner's function is first called with: a stub that returns None is "not
attempted yet", not wrong."""


def attempted(exercise: str, answer) -> bool:
    parts = answer if isinstance(answer, tuple) else (answer,)
    if any(p is None or (isinstance(p, (list, str)) and not p) for p in parts):
        return False
    fn = parts[0]
    return not (exercise in PROBES and callable(fn) and fn(*PROBES[exercise]) is None)


def check(exercise: str, answer) -> bool:
    """Check notebook ``exercise``'s answer and print the verdict. Returns True when it is right
    and False when it is not attempted yet (None, an empty list, or a function that returns
    None); a wrong answer raises :class:`ExerciseError` saying what is wrong."""
    if exercise not in CHECKS:
        raise KeyError(f"no exercise {exercise!r}; expected one of {sorted(CHECKS)}")
    if not attempted(exercise, answer):
        print(f"exercise {exercise}: not attempted yet (a solution: {SOLUTIONS}/{exercise}_*.ipynb)")
        return False
    print(f"exercise {exercise}: {CHECKS[exercise](answer)}")
    return True
