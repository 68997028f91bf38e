from fractions import Fraction
from math import comb

import numpy as np
import pytest

from nudgelib.core.stats import (
    bootstrap_ci,
    pass_at_k,
    pass_at_k_curve,
    per_problem_pass_at_k,
    power_of_two_ks,
)


def test_pass_at_k_equals_binomial_definition_up_to_1024():
    worst = 0.0
    for n in [1, 2, 3, 5, 8, 16, 33, 100, 257, 512, 1024]:
        for c in sorted({0, 1, 2, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
            for k in power_of_two_ks(n):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))
                worst = max(worst, abs(pass_at_k(n, c, k) - float(exact)))
    assert worst < 1e-9


def test_pass_at_k_hand_values_and_errors():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 2, 3) == 1.0
    with pytest.raises(ValueError, match="n >= k"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(4, 1, 1.0)


def test_curve_and_ks():
    assert power_of_two_ks(8) == [1, 2, 4, 8] and power_of_two_ks(6) == [1, 2, 4, 6]
    curve = pass_at_k_curve([(4, 1), (4, 0)])
    assert curve == pytest.approx({1: 0.125, 2: 0.25, 4: 0.5})
    table = per_problem_pass_at_k([(4, 1), (4, 0)], [1, 2, 4])
    assert table[0].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert table[1].tolist() == [0.0, 0.0, 0.0]
    assert table.mean(0).tolist() == pytest.approx(list(curve.values()))


def test_bootstrap_ci_covers_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, big = rng.normal(3.0, 1.0, 20), rng.normal(3.0, 1.0, 2000)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_ci(big)
    assert lo2 < 3.0 < hi2 and (hi2 - lo2) < (hi - lo) / 5
    lo_k, hi_k = bootstrap_ci(np.stack([small, small + 1], axis=1))
    assert lo_k.shape == (2,) and lo_k[1] == pytest.approx(lo + 1)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    lo_m, hi_m = bootstrap_ci(small, stat=np.median)
    assert lo_m < np.median(small) < hi_m
    with pytest.raises(ValueError, match=">= 2 items"):
        bootstrap_ci([1.0])


@pytest.mark.parametrize("df", [1, 2, 5, 20, 30])
def test_t_quantile_agrees_with_the_tables_and_other_levels_widen_the_interval(df):
    from nudgelib.core import stats

    assert stats.t_quantile(0.975, df) == pytest.approx(stats.t95(df), abs=2e-3)
    assert stats.t_quantile(0.80, df) == pytest.approx(stats.t80(df), abs=2e-3)
    x = [0.1, 0.3, 0.2, 0.5]
    m, lo, hi = stats.mean_ci(x)
    m2, lo2, hi2 = stats.mean_ci(x, 0.99)
    assert m2 == m and lo2 < lo and hi2 > hi
    # df 3 at 99 %: t = 5.841 (standard table)
    assert hi2 - m2 == pytest.approx(5.841 * float(np.std(x, ddof=1)) / 2, abs=1e-3)
