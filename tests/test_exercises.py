"""nudgelib.exercises: every check accepts a right answer, rejects a wrong one with a sentence
that says what is wrong, and treats a stub as not attempted (the solutions notebooks in
notebooks/solutions run the right answers in CI)."""

import math

import pytest
import torch

from nudgelib.exercises import CHECKS, ExerciseError, check


def test_stubs_are_not_attempted(capsys):
    stubs = {"01": ("12", [], []), "02": lambda p, s: None, "03": lambda r: None,
             "04": lambda k, g: None, "05": ("q", "12", ""),
             "06": (lambda f, g, p: None, [], 8, 4), "07": lambda sd, e: None,
             "08": lambda a, b, g: None}
    assert set(stubs) == set(CHECKS)
    for ex, stub in stubs.items():
        assert check(ex, stub) is False
    assert capsys.readouterr().out.count("not attempted yet") == len(stubs)


def test_01_fooling_the_naive_reward():
    assert check("01", ("12", ["Is it 12? No: \\boxed{13}", "\\boxed{120}"],
                        ["\\boxed{\\frac{24}{2}}", "\\boxed{\\dfrac{36}{3}}"]))
    with pytest.raises(ExerciseError, match="correct by the verifier"):
        check("01", ("12", ["\\boxed{12}", "\\boxed{120}"], ["\\boxed{\\frac{24}{2}}"] * 2))
    with pytest.raises(ExerciseError, match="already pays"):
        check("01", ("12", ["\\boxed{120}"] * 2, ["\\boxed{12.0}", "\\boxed{\\frac{24}{2}}"]))


def test_02_group_size_by_brute_force():
    def right(p, share):
        return next(g for g in range(2, 10**6) if 1 - (1 - p) ** g - p ** g >= share)

    assert check("02", right)
    # the closed form without the p^G term and without the ceiling's off-by-one is wrong
    with pytest.raises(ExerciseError, match="smallest G"):
        check("02", lambda p, s: max(2, round(math.log(1 - s) / math.log(1 - p))))


def test_03_rloo():
    assert check("03", lambda r: r - (r.sum() - r) / (len(r) - 1))
    with pytest.raises(ExerciseError, match="RLOO's"):
        check("03", lambda r: r - r.mean())  # Dr. GRPO, not RLOO


def test_04_kept_failure():
    def right(k, g):
        if k == 0:
            return 0.0
        return -(k / g) / (math.sqrt(k * (g - k) / (g * (g - 1))) + 1e-6)

    assert check("04", right)
    with pytest.raises(ExerciseError, match="library gives"):  # population std instead of Bessel's
        check("04", lambda k, g: 0.0 if k == 0 else -(k / g) / math.sqrt(k / g * (1 - k / g)))


def test_05_leak_check():
    assert check("05", ("What is 4 + 5 + 3?", "12", "Take 13 and subtract one."))
    with pytest.raises(ExerciseError, match="leak check flags"):
        check("05", ("What is 4 + 5 + 3?", "12", "The answer is 12."))


def test_06_regenerated_rows_against_logged_rows():
    rows = [{"step": 1, "frac_nudged": 0.0, "rows_resampled": 0},
            {"step": 2, "frac_nudged": 0.25, "rows_resampled": 7},
            {"step": 3, "frac_nudged": 0.75, "rows_resampled": 21}]
    assert check("06", (lambda f, g, p: round(f * p) * (g - 1), rows, 8, 4))
    with pytest.raises(ExerciseError, match="step 2"):
        check("06", (lambda f, g, p: round(f * p) * g, rows, 8, 4))  # forgets the kept row


def test_07_seeds_needed():
    from nudgelib.core.stats import t_quantile

    def right(sd, effect):
        n = 2
        while (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n) > effect:
            n += 1
        return n

    assert check("07", right)
    with pytest.raises(ExerciseError, match="smallest number of seeds"):  # normal quantiles
        check("07", lambda sd, e: max(2, math.ceil(((1.96 + 0.8416) * sd / e) ** 2)))


def test_08_tokens_per_point_of_gain():
    def right(exit_tokens, control_tokens, gain):
        return max(0.0, exit_tokens - control_tokens) / (100 * gain) if gain > 0 else math.inf

    assert check("08", right)
    with pytest.raises(ExerciseError, match="per point"):  # per unit of gain, not per point
        check("08", lambda a, b, g: max(0.0, a - b) / g if g > 0 else math.inf)
    with pytest.raises(ExerciseError, match="never below 0"):  # a cheaper exit has no negative price
        check("08", lambda a, b, g: (a - b) / (100 * g) if g > 0 else math.inf)


def test_unknown_exercise():
    with pytest.raises(KeyError, match="no exercise"):
        check("99", torch.zeros(1))
