"""Evaluation metrics: unbiased pass@k, pass@k curves, bootstrap confidence intervals.

pass@k (Chen et al. 2021, arXiv 2107.03374) for n samples of which c are correct:

    pass@k = 1 - C(n - c, k) / C(n, k)  (= 1 when n - c < k)

computed in the stable product form 1 - prod_{i = n-c+1}^{n} (1 - k / i), which never forms
the huge binomials (n = 1024 overflows floats in the naive form). Requires n >= k.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["bootstrap_ci", "pass_at_k", "pass_at_k_curve", "per_problem_pass_at_k",
           "power_of_two_ks"]


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
