"""nudgelib.experiments.toy_nurl: statistics against hand values, verdict rules, the harness's
own invariants, and the fast run that CI executes (direction of the main effect)."""

import json
import math

import numpy as np
import pytest

from nudgelib.core import stats
from nudgelib.experiments import toy_nurl as tn


def _t_cdf(x: float, df: int) -> float:
    """Student's t CDF by numerical integration of its density (independent of the table)."""
    t = np.linspace(-200.0, x, 400_001)
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    pdf = c * (1 + t**2 / df) ** (-(df + 1) / 2)
    return float(np.trapezoid(pdf, t)) if hasattr(np, "trapezoid") else float(np.trapz(pdf, t))


@pytest.mark.parametrize("df", [2, 4, 9, 20])
def test_t_table_is_the_975_quantile(df):
    assert _t_cdf(stats.t95(df), df) == pytest.approx(0.975, abs=2e-4)


def test_t95_between_listed_values_is_conservative_and_errors():
    assert stats.t95(22) == stats.T95[20] and stats.t95(31) == 1.960
    with pytest.raises(ValueError, match="degrees of freedom"):
        stats.t95(0)


def test_mean_ci_hand_values():
    # [1, 2, 3]: mean 2, sd 1, half width 4.303 / sqrt(3) = 2.4844
    m, lo, hi = stats.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 2.4844, abs=1e-4) and hi == pytest.approx(4.4844, abs=1e-4)
    with pytest.raises(ValueError, match=">= 2 values"):
        stats.mean_ci([0.5])


@pytest.mark.parametrize("rel, lo, hi, margin, expect", [
    (">", 0.01, 0.09, 0.05, "reproduced"),
    (">", -0.01, 0.11, 0.05, "inconclusive"),  # right direction, 0 inside
    (">", -0.10, 0.04, 0.05, "not reproduced"),  # rules out +0.05 and more
    (">", -0.30, 0.20, 0.05, "inconclusive"),  # mean <= 0 but too wide to rule anything out
    (">", -0.01, 0.05, 0.05, "inconclusive"),  # the margin itself is not ruled out
    ("<", -0.09, -0.01, 0.04, "reproduced"), ("<", -0.09, 0.01, 0.04, "inconclusive"),
    ("<", -0.03, 0.08, 0.04, "not reproduced"),
    ("<=", -0.2, 0.019, 0.02, "reproduced"), ("<=", -0.2, 0.03, 0.02, "inconclusive"),
    ("<=", 0.021, 0.2, 0.02, "not reproduced"),
])
def test_verdict_rules(rel, lo, hi, margin, expect):
    assert stats.verdict(rel, lo, hi, margin) == expect


def _t_quantile_one_sided(q, df):
    """By bisection on the integrated density (independent of the tables)."""
    lo, hi = 0.0, 10.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("df", [2, 3, 9, 20])
def test_t80_table_is_the_80_percent_quantile(df):
    assert stats.t80(df) == pytest.approx(_t_quantile_one_sided(0.80, df), abs=2e-3)


def test_mde_by_hand_and_the_judge_fields():
    # the committed real-model run's pass@64 differences: sd .2887, n 3, df 2
    d = [-0.333, 0.167, 0.167]
    sd = float(np.std(d, ddof=1))
    assert stats.mde(d) == pytest.approx((4.303 + 1.061) * sd / 3 ** 0.5, abs=1e-9)
    assert stats.mde(d) == pytest.approx(0.894, abs=1e-3)
    j = stats.judge(">", d, 0.06)
    assert j["verdict"] == "inconclusive" and j["margin"] == 0.06  # was "not reproduced"
    assert j["diff_ci95"] == pytest.approx([0.0003 - 4.303 * sd / 3 ** 0.5,
                                            0.0003 + 4.303 * sd / 3 ** 0.5], abs=1e-4)
    tight = stats.judge(">", [-0.01, 0.0, 0.01, 0.0], 0.06)  # CI +-0.013: rules out +0.06
    assert tight["verdict"] == "not reproduced" and tight["mde"] < 0.06
    with pytest.raises(ValueError, match="margin"):
        stats.verdict(">", 0, 1, -0.1)


def _fake_seed(seed, hard_at, learn):
    """A per-seed result with given hard pass@k rows and learnable ratios (k = 1, 2)."""
    arms = list(hard_at)
    return {"seed": seed, "k": [1, 2], "config": {"x": 1},
            "hard": {a: hard_at[a] for a in arms}, "easy": {a: [0.5, 0.7] for a in arms},
            "hard_exact": {a: hard_at[a] for a in arms}, "easy_exact": {a: [0.5, 0.7] for a in arms},
            "learnable_ratio": learn, "stage_switch": {"nurl": 3},
            "counts": {a: {"easy": [1] * 2, "hard": [1] * 6} for a in arms}, "seconds": 1.0}


def test_aggregate_and_claims_on_hand_made_results():
    seeds = [
        _fake_seed(0, {"base": [0.0, 0.30], "grpo": [0.2, 0.30], "nurl": [0.3, 0.50]},
                   {"base": 0.5, "grpo": 0.5, "nurl": 0.7}),
        _fake_seed(1, {"base": [0.0, 0.32], "grpo": [0.2, 0.31], "nurl": [0.4, 0.60]},
                   {"base": 0.5, "grpo": 0.6, "nurl": 0.7}),
        _fake_seed(2, {"base": [0.0, 0.34], "grpo": [0.2, 0.32], "nurl": [0.2, 0.40]},
                   {"base": 0.5, "grpo": 0.5, "nurl": 0.8}),
    ]
    agg = tn.aggregate(seeds)
    assert agg["seeds"] == [0, 1, 2] and agg["hard"]["nurl"] == pytest.approx([0.3, 0.5])
    lo, hi = agg["ci95"]["hard"]["nurl"][1]  # values .5 .6 .4: sd .1 -> half 4.303 * .1 / sqrt 3
    assert (lo, hi) == pytest.approx((0.5 - 0.24844, 0.5 + 0.24844), abs=1e-4)
    c = {r["id"]: r for r in agg["claims"]}
    # nurl - grpo at k=2: .20 .29 .08 -> mean .19, sd .10536 -> CI .19 +- .2617: includes 0
    # and the margin .06: inconclusive; MDE (4.303 + 1.061) * .10536 / sqrt 3 = .3263
    assert c["upper_bound_nurl"]["diff"] == pytest.approx(0.19)
    assert c["upper_bound_nurl"]["verdict"] == "inconclusive"
    assert c["upper_bound_nurl"]["mde"] == pytest.approx(0.3263, abs=1e-4)
    # grpo - base at k=2: 0, -.01, -.02 -> upper end < .02
    assert c["upper_bound_grpo"]["verdict"] == "reproduced"
    # learnable nurl - grpo: .2 .1 .3 -> mean .2, sd .1, CI [-.048, .448] -> inconclusive
    assert c["learnable_nurl"]["verdict"] == "inconclusive"
    # held-out pass@1 weights easy (2 problems) and hard (6): nurl seed 0 = (.5*2 + .3*6) / 8
    assert tn._metric(seeds[0], "nurl", "heldout@1") == pytest.approx(0.35)
    assert "trigger" not in c  # its arms were not run
    table = tn.claims_table(agg)
    assert "NuRL raises the upper bound" in table and "**inconclusive**" in table
    assert "| 0.326 | 0.060 |" in table  # MDE and margin beside the interval
    with pytest.raises(ValueError, match="different config"):
        tn.aggregate([seeds[0], {**seeds[1], "config": {"x": 2}}])


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="arms"):
        tn.ToyNuRLConfig(arms=("base", "grpo", "nurl", "magic"))
    with pytest.raises(ValueError, match="must include 'nurl'"):
        tn.ToyNuRLConfig(arms=("base", "grpo"))
    with pytest.raises(ValueError, match="stage1_max_steps"):
        tn.ToyNuRLConfig(steps=10, stage1_max_steps=10)
    with pytest.raises(ValueError, match="heldout_counts"):
        tn.ToyNuRLConfig(heldout_counts={"easy": 1, "hard": 10})
    with pytest.raises(ValueError, match="unknown ToyNuRLConfig"):
        tn.ToyNuRLConfig.from_dict({"stepz": 3})


def test_heldout_problems_are_never_trained_on():
    cfg = tn.ToyNuRLConfig.fast()
    task, train, heldout = tn.make_task(cfg, 0)
    train_ids = {p.id for p in train}
    held_ids = {p.id for ps in heldout.values() for p in ps}
    assert not train_ids & held_ids
    assert len(held_ids) == sum(cfg.heldout_counts.values())
    assert sum(p.level == 3 for p in train) == cfg.train_counts["hard"]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """The CI variant through the CLI: every arm, two seeds (about 45 s on 2 cores)."""
    out = tmp_path_factory.mktemp("toy_nurl") / "fast.json"
    assert tn.main(["--fast", "--seeds", "0", "1", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_fast_run_schema(fast_run):
    cfg = tn.ToyNuRLConfig.fast()
    assert fast_run["seeds"] == [0, 1]
    assert fast_run["k"] == [1, 2, 4, 8, 16, 32, 64, 128, 256] and fast_run["k"][-1] >= 256
    for split in ("hard", "easy"):
        assert set(fast_run[split]) == set(tn.ARMS)
        for curve in fast_run[split].values():
            assert len(curve) == len(fast_run["k"]) and curve == sorted(curve)  # rises with k
    assert set(fast_run["learnable_ratio"]) == set(tn.ARMS)
    assert fast_run["config"] == cfg.to_dict()
    assert fast_run["sampling"]["sampler"] == "multinomial"  # the toy table's own draw
    assert {r["id"] for r in fast_run["claims"]} >= {"upper_bound_nurl", "trigger", "schedule"}


def test_fast_run_main_effect_direction(fast_run):
    """GRPO -> NuRL raises the hint-free upper bound on held-out hard problems over GRPO
    (mean over the two seeds at k = 256), and both trained arms beat the base at pass@1."""
    hard = fast_run["hard"]
    assert hard["nurl"][-1] > hard["grpo"][-1]
    assert hard["nurl"][0] > hard["base"][0] and hard["grpo"][0] > hard["base"][0]


def test_fast_run_sampled_pass_at_k_matches_exact(fast_run):
    """The unbiased estimator from n = 256 samples against 1 - (1 - p)^k from the table."""
    for r in fast_run["per_seed"]:
        for split in ("hard", "easy"):
            for arm in r[split]:
                assert r[split][arm][0] == pytest.approx(r[f"{split}_exact"][arm][0], abs=0.03)


def test_two_stage_arms_share_stage_one_with_grpo(fast_run):
    """Same seed, same base: until the switch, two-stage NuRL IS the GRPO run."""
    for r in fast_run["per_seed"]:
        switch = r["stage_switch"]["nurl"]
        assert 1 <= switch < r["config"]["steps"]
        g, n = r["curves"]["grpo"], r["curves"]["nurl"]
        assert n["reward_mean"][:switch] == g["reward_mean"][:switch]
        assert n["train_hard_exact"][:switch] == g["train_hard_exact"][:switch]
        assert set(n["stage"][:switch]) == {1} and set(n["stage"][switch:]) == {2}
        assert max(x or 0 for x in n["frac_nudged"][switch:]) > 0
        assert all((x or 0) == 0 for x in g["frac_nudged"])


def test_pass_at_k_figure_draws_mean_and_band():
    agg = {"k": [1, 2, 4], "hard": {"base": [0.1, 0.2, 0.3], "grpo": [0.2, 0.3, 0.4]},
           "ci95": {"hard": {"grpo": [[0.1, 0.3], [0.2, 0.4], [0.3, 0.5]]}}}
    fig = tn.pass_at_k_figure(agg, arms=("base", "grpo"))
    assert [t.name for t in fig.data] == ["base", "GRPO", "GRPO 95 % CI"]  # no CI given for base
    band = fig.data[2]
    assert list(band.x) == [1, 2, 4, 4, 2, 1] and list(band.y) == [0.3, 0.4, 0.5, 0.3, 0.2, 0.1]
    assert fig.layout.xaxis.type == "log"


def test_fast_single_seed_runs_for_any_seed(tmp_path):
    """Issue 20: `--fast --seed S` works for any seed, and says it is exploration."""
    out = tmp_path / "s.json"
    assert tn.main(["--fast", "--seed", "918273", "--arms", "nurl_answer", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["seed"] == 918273 and res["protocol"] == "exploration"
    assert set(res["hard"]) == {"base", "grpo", "nurl", "nurl_answer"}


def test_protocol_label():
    assert tn.protocol_of(tn.ToyNuRLConfig(), tn.CONFIRMATORY_SEEDS) == "confirmatory"
    assert tn.protocol_of(tn.ToyNuRLConfig(), [1000, 1001]) == "exploration"
    assert tn.protocol_of(tn.ToyNuRLConfig.fast(), tn.CONFIRMATORY_SEEDS) == "exploration"
    with pytest.raises(SystemExit):
        tn.main(["--confirmatory", "--fast", "--out", "x.json"])


def test_committed_results_are_the_confirmatory_run_with_verdicts_by_the_fixed_rule():
    """data/results/toy_nurl.json: the committed design on >= 10 confirmatory seeds, and every
    verdict recomputed from its per-seed numbers by today's rule."""
    res = tn.load_results()
    assert res is not None, "data/results/toy_nurl.json is missing"
    assert res["protocol"] == "confirmatory" and tuple(res["seeds"]) == tn.CONFIRMATORY_SEEDS
    assert len(res["seeds"]) >= 10 and res["config"] == tn.ToyNuRLConfig().to_dict()
    again = tn.claims({"per_seed": res["per_seed"]})
    assert [(c["id"], c["verdict"]) for c in again] == [(c["id"], c["verdict"]) for c in res["claims"]]
    for c in again:
        if "diff" in c:
            lo, hi = c["diff_ci95"]
            assert stats.verdict(c["relation"], lo, hi, c["margin"]) == c["verdict"]
            assert c["mde"] > 0 and c["margin"] == tn.MARGINS[c["id"]][0]


def test_pass_at_k_band_is_clipped_to_probabilities():
    """Issue 21: a 2-seed t-interval runs past [0, 1]; the drawn band stops at 0 and 1."""
    agg = {"k": [1, 2], "hard": {"grpo": [0.05, 0.9]},
           "ci95": {"hard": {"grpo": [[-1.5, 0.6], [0.2, 2.0]]}}}
    band = tn.pass_at_k_figure(agg, arms=("grpo",)).data[1]
    assert list(band.y) == [0.6, 1.0, 0.2, 0.0]
    assert min(band.y) >= 0 and max(band.y) <= 1
