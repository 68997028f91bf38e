"""The statistics every experiment and evaluation uses: unbiased pass@k, pass@k curves,
bootstrap confidence intervals, 95 % t-intervals over seeds and the verdict rule of a claim.

pass@k (Chen et al. 2021, arXiv 2107.03374) for n samples of which c are correct:

    pass@k = 1 - C(n - c, k) / C(n, k)  (= 1 when n - c < k)

computed in the stable product form 1 - prod_{i = n-c+1}^{n} (1 - k / i), which never forms
the huge binomials (n = 1024 overflows floats in the naive form). Requires n >= k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["T80", "T95", "VERDICTS", "bootstrap_ci", "judge", "mde", "mean_ci", "pass_at_k",
           "pass_at_k_curve", "per_problem_pass_at_k", "power_of_two_ks", "t80", "t95",
           "t_quantile", "verdict"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k samples (of n, c correct) is correct."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k}")
    if n < k:
        raise ValueError(f"pass_at_k: need n >= k samples, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def power_of_two_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n (and n itself if it is not a power of two)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def pass_at_k_curve(counts: Iterable[tuple[int, int]], ks: Sequence[int] | None = None,
                    ) -> dict[int, float]:
    """Mean pass@k over problems, given (n, c) per problem; ks default to powers of two <= min n."""
    counts = [(int(n), int(c)) for n, c in counts]
    if not counts:
        raise ValueError("pass_at_k_curve: no problems given")
    ks = list(ks) if ks is not None else power_of_two_ks(min(n for n, _ in counts))
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


def per_problem_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> np.ndarray:
    """Array [problems, len(ks)] of pass@k per problem (for bootstrapping curves)."""
    return np.array([[pass_at_k(int(n), int(c), k) for k in ks] for n, c in counts])


def bootstrap_ci(values, *, stat: Callable[..., np.ndarray] = np.mean,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Percentile bootstrap CI of ``stat`` over the first axis of ``values`` (e.g. problems).

    Works on [P] arrays (a scalar CI) and on [P, K] arrays (a CI per column, e.g. per k).
    ``stat`` is a numpy-style reduction taking ``axis`` (np.mean, np.median, ...).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"bootstrap_ci needs >= 2 items, got {x.shape[0]}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    boots = stat(x[idx], axis=1)  # [n_boot, ...]: one statistic per resample
    lo, hi = np.percentile(boots, [100 * (1 - level) / 2, 100 * (1 + level) / 2], axis=0)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


# ----------------------------------------------------------------------------- intervals over seeds, verdicts

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (standard tables); degrees of
freedom between listed values use the next smaller listed one (a wider interval), above 30 the
normal 1.960."""


def _from_table(table: dict, normal: float, name: str, df: int) -> float:
    """A quantile from ``table`` at the next smaller listed df (conservative), ``normal`` above
    30."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"{name} needs degrees of freedom >= 1, got {df!r}")
    return normal if df > 30 else table[max(d for d in table if d <= df)]


def t95(df: int) -> float:
    return _from_table(T95, 1.960, "t95", df)


def _two_sided(level: float, df: int) -> float:
    """The t quantile of a two-sided interval at ``level``: the table at 95 %, else computed."""
    return t95(df) if level == 0.95 else t_quantile(1 - (1 - level) / 2, df)


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom, 0.5 < q < 1: bisection on
    the CDF, itself Simpson's rule over the density (no SciPy; agrees with the tables above to
    1e-3)."""
    if not 0.5 < q < 1 or not isinstance(df, int) or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and df >= 1, got q={q!r}, df={df!r}")
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        f = c * (1 + t * t / df) ** (-(df + 1) / 2)
        h = x / 4000
        return 0.5 + h / 3 * float(f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a t-interval over independent runs (seeds), 95 % by default (from the
    table :data:`T95`); another ``level`` (e.g. 0.975 for two comparisons, Bonferroni) from
    :func:`t_quantile`."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"mean_ci needs >= 2 values (seeds), got {len(np.atleast_1d(x))}")
    m = float(x.mean())
    df = len(x) - 1
    half = _two_sided(level, df) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


T80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889,
       9: 0.883, 10: 0.879, 11: 0.876, 12: 0.873, 13: 0.870, 14: 0.868, 15: 0.866, 16: 0.865,
       17: 0.863, 18: 0.862, 19: 0.861, 20: 0.860, 25: 0.856, 30: 0.854}
"""One-sided 80 % quantiles of Student's t by degrees of freedom (standard tables; between
listed values the next smaller listed one, above 30 the normal 0.842): the power term of the
minimum detectable effect."""


def t80(df: int) -> float:
    return _from_table(T80, 0.842, "t80", df)


def mde(values: Sequence[float], level: float = 0.95) -> float:
    """The minimum detectable effect of a paired t-test on ``values`` (differences a - b, one
    per independent unit: seeds, or problems of one seed): the true mean difference that a
    two-sided test at ``1 - level`` (5 % by default) detects with 80 % power,
    (t_(1+level)/2 + t_0.80) x sd / sqrt(n), with df n - 1 (the usual approximation with the
    sample sd)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"mde needs >= 2 values, got {len(np.atleast_1d(x))}")
    df = len(x) - 1
    return (_two_sided(level, df) + t80(df)) * float(x.std(ddof=1)) / math.sqrt(len(x))


VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def verdict(relation: str, lo: float, hi: float, margin: float) -> str:
    """A claim's verdict from the 95 % interval [lo, hi] of its difference a - b and the margin
    fixed with the claim (the smallest effect that would count, e.g. the paper's):

    * ``>`` (a beats b): **reproduced** if lo > 0; **not reproduced** if hi < margin (the
      interval rules out an effect as large as the margin); else **inconclusive**;
    * ``<`` (a is below b): the mirror image (reproduced if hi < 0, not reproduced if
      lo > -margin);
    * ``<=`` (a does not exceed b by more than the margin): reproduced if hi < margin, not
      reproduced if lo > margin, else inconclusive.

    An interval that is wide on both sides is inconclusive, whatever its mean: it could not
    have seen the effect."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if relation == ">":
        return "reproduced" if lo > 0 else "not reproduced" if hi < margin else "inconclusive"
    if relation == "<":
        return "reproduced" if hi < 0 else "not reproduced" if lo > -margin else "inconclusive"
    if relation == "<=":
        return "reproduced" if hi < margin else "not reproduced" if lo > margin \
            else "inconclusive"
    raise ValueError(f"relation must be '>', '<' or '<=', got {relation!r}")


def judge(relation: str, diffs: Sequence[float], margin: float, *,
          comparisons: int = 1) -> dict:
    """A claim judged on its paired differences: ``diff`` (mean), ``diff_ci95`` (t-interval,
    95 % or, for one of ``comparisons`` pre-registered comparisons, Bonferroni's
    1 - 0.05 / comparisons), ``mde`` (80 % power at that level), ``margin`` and ``verdict``
    (:func:`verdict`)."""
    level = 1 - 0.05 / comparisons
    m, lo, hi = mean_ci(diffs, level)
    return {"diff": m, "diff_ci95": [lo, hi], "mde": mde(diffs, level), "margin": float(margin),
            "level": level, "verdict": verdict(relation, lo, hi, margin)}
