"""nudgelib.experiments.lm_fork: the forked design's statistics by hand, and its --fast run
(the run CI executes: every arm forked from one stage-1 checkpoint onto one pool)."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from nudgelib.core import stats
from nudgelib.experiments import lm_fork as lf


def _res(fork, arms):
    """A result with held-out chain counts (n = 4, k = 2) per arm and seed."""
    return {"config": {"seeds": [1, 2], "eval_samples": 4, "k_primary": 2},
            "fork": {"chain": fork},
            "arms": {a: {str(s): {"eval": {"chain": c}} for s, c in zip((1, 2), per)}
                     for a, per in arms.items()}}


def test_claims_and_boundary_crossing_by_hand():
    res = _res([0, 0, 2, 4], {"control": [[0, 0, 2, 4], [0, 1, 2, 4]],
                              "nurl_hinted": [[1, 0, 2, 4], [2, 2, 2, 4]]})
    rows = {r["id"]: r for r in lf.claims(res)}
    assert set(rows) == {"hinted_upper", "hinted_pass1"}  # only the arms that ran
    # pass@1 per problem = c / 4; seed means: control .375 .4375, nurl .4375 .625
    p1 = rows["hinted_pass1"]
    assert p1["a_mean"] == pytest.approx((0.4375 + 0.625) / 2)
    assert p1["b_mean"] == pytest.approx((0.375 + 0.4375) / 2)
    diffs = [0.0625, 0.1875]
    assert p1["diff"] == pytest.approx(np.mean(diffs))
    # Bonferroni over the five pre-registered comparisons: a 99 % interval, t(1) = 63.657
    half = 63.657 * np.std(diffs, ddof=1) / np.sqrt(2)
    assert p1["level"] == pytest.approx(0.99)
    assert p1["diff_ci95"] == pytest.approx([p1["diff"] - half, p1["diff"] + half], abs=2e-3)
    assert p1["verdict"] == "inconclusive" and p1["mde"] > half
    # boundary crossing: the fork model solves problems 0 and 1 never (0/4); seed 1's NuRL
    # solves problem 0 once -> 1/2; seed 2's solves both -> 1
    assert lf.boundary_crossing(res, "nurl_hinted", "1") == 0.5
    assert lf.boundary_crossing(res, "nurl_hinted", "2") == 1.0
    assert rows["hinted_upper"]["boundary_crossing_a"] == [0.5, 1.0]
    # pass@2 from n = 4 by the unbiased estimator: c = 1 -> 1 - C(3,2)/C(4,2) = .5
    assert lf.metric_values(res, "nurl_hinted", "1", "chain@k")[0] == pytest.approx(0.5)


def test_sft_pairs_write_the_solution_in_one_line_and_the_design_is_checked():
    from nudgelib.tasks.arithmetic import arithmetic_problems

    pool = arithmetic_problems({"chain": 3, "sum": 2}, split="train", seed=0)
    pairs = lf.sft_pairs(pool)
    assert len(pairs) == 3
    for (q, t), p in zip(pairs, [p for p in pool if p.subject == "chain"]):
        nums = [int(x) for x in t.split("=")[0].split("+")]
        assert q == p.question and sum(nums) == int(p.answer) and t.endswith(f"= {p.answer}")
    with pytest.raises(ValueError, match="control"):
        lf.ForkConfig(arms=("nurl_hinted",))
    with pytest.raises(ValueError, match="ForkConfig.switch_step=0"):
        lf.ForkConfig(switch_step=0)
    assert lf.ForkConfig().protocol == "confirmatory" and lf.ForkConfig.pilot().seeds != \
        lf.ForkConfig().seeds  # exploration never uses the confirmatory seeds


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, offline_model_dir):
    out = tmp_path_factory.mktemp("fork") / "fast.json"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "nudgelib.experiments.lm_fork", "--fast",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"lm_fork --fast: {time.time() - t0:.0f} s")
    return json.loads(out.read_text())


def test_fast_run_forks_every_arm_onto_one_pool(fast_run):
    r, cfg = fast_run, lf.ForkConfig.fast()
    assert r["protocol"] == "ci" and r["config"] == cfg.to_dict()
    assert 0 < len(r["pool"]) <= sum(cfg.train_counts.values())
    assert set(r["arms"]) == set(lf.DESIGN_ARMS)
    for arm, by_seed in r["arms"].items():
        assert set(by_seed) == {str(s) for s in cfg.seeds}
        for got in by_seed.values():
            assert len(got["eval"]["chain"]) == cfg.heldout_counts["chain"]
            assert all(0 <= c <= cfg.eval_samples for c in got["eval"]["chain"])
            nudged = got["curves"]["frac_nudged"]
            if arm in ("control", "sft_grpo"):
                assert all(x == 0 for x in nudged)  # no hints in these arms
            assert len(got["sft_losses"]) == (cfg.sft_updates if arm == "sft_grpo" else 0)
            # the ledger: stage 2's sampling calls (one per GRPO update here) and tokens
            cost, grpo_updates = got["cost"], cfg.stage2_updates - len(got["sft_losses"])
            assert cost["model_calls"] >= grpo_updates and cost["tokens_plain"] > 0
            assert cost["tokens_trained"] > 0 and (cost["tokens_hinted"] > 0) <= (arm.startswith("nurl"))
    assert {c["id"] for c in r["claims"]} == {c[0] for c in lf.CLAIMS}
    for c in r["claims"]:
        assert c["level"] == pytest.approx(1 - 0.05 / len(lf.CLAIMS))
        assert c["verdict"] in stats.VERDICTS and c["mde"] >= 0 and c["margin"] > 0
    assert r["sampling"]["sampler"] == "race"


def _full_res():
    """A two-seed result with every field the report reads (n = 4, k = 2)."""
    res = _res([0, 0, 2, 4], {"control": [[0, 0, 2, 4], [0, 1, 2, 4]],
                              "nurl_hinted": [[1, 0, 2, 4], [2, 2, 2, 4]]})
    res["config"].update(regression_samples=2)
    res["fork"].update(sum=[2, 1], product=[0, 2], pool_chain=[0, 3, 0, 1])
    for arm, reliance in (("control", [None, None]), ("nurl_hinted", [1.5, 2.5])):
        for s, pool in (("1", [1, 0, 0, 0]), ("2", [1, 1, 0, 2])):
            res["arms"][arm][s]["eval"].update(sum=[2, 2], product=[1, 1], pool_chain=pool)
            res["arms"][arm][s]["curves"] = {"frac_nudged": [0.5, 0.0], "hinted_successes":
                                             [3, 1], "hint_reliance": reliance}
    res["claims"] = lf.claims(res)
    return res


def test_report_tables_by_hand():
    from nudgelib.experiments import lm_fork_report as rep

    res = _full_res()
    fork = rep.fork_values(res)
    # fork: pass@1 = mean(c / 4) = (0 + 0 + .5 + 1) / 4; pool learnable = 2 of 4 solved once
    assert fork["chain@1"] == pytest.approx(0.375) and fork["pool_learnable"] == 0.5
    assert fork["sum@1"] == pytest.approx(0.75) and fork["product@1"] == pytest.approx(0.5)
    v = rep.arm_values(res, "nurl_hinted")
    assert v["crossing"] == [0.5, 1.0]             # as boundary_crossing, per seed
    assert v["pool_learnable"] == [0.25, 0.75]     # 1 of 4, then 3 of 4
    assert v["hint_reliance"] == [2.0, 2.0]        # the mean of the logged steps
    assert rep.arm_values(res, "control")["hint_reliance"] == [pytest.approx(np.nan,
                                                               nan_ok=True)] * 2
    table = rep.arms_table(res)
    assert table.count("\n") == 1 + 1 + 2          # header, rule, fork, two arms
    # the interval of the crossing column: t(1) = 12.706 over seeds .5 and 1
    m, half = 0.75, 12.706 * np.std([0.5, 1.0], ddof=1) / np.sqrt(2)
    assert f"{m:.3f} [{m - half:.3f}, {m + half:.3f}]" in table
    claims = rep.claims_table(res)
    assert "**inconclusive**" in claims and "| 0.990 |" in claims
    fig = rep.pass_at_k_figure(res)
    assert [t.name for t in fig.data if t.showlegend is not False][:3] == [
        rep.ARM_LABELS["fork"], rep.ARM_LABELS["control"], rep.ARM_LABELS["nurl_hinted"]]
    # the fork's pass@1, @2, @4: c = 2 of 4 gives pass@2 = 1 - C(2,2)/C(4,2) = 5/6
    assert list(fig.data[0].y) == pytest.approx([0.375, (5 / 6 + 1) / 4, 0.5])
    mech = rep.mechanism_figure(res)
    assert [t.name for t in mech.data] == [rep.ARM_LABELS["nurl_hinted"]]
    assert list(mech.data[0].y) == [1.5, 2.5]      # per update, the mean over seeds


def test_fast_run_report_renders(fast_run):
    from nudgelib.experiments import lm_fork_report as rep

    assert rep.arms_table(fast_run).count("\n") == 2 + len(lf.DESIGN_ARMS)
    assert rep.claims_table(fast_run).count("**") == 2 * len(lf.CLAIMS)


def test_the_committed_confirmatory_run_is_the_preregistered_design_and_its_claims_recompute():
    res = lf.load_committed()
    if res is None:
        pytest.skip("no checkout with data/results")
    assert res["experiment"] == "lm_fork" and res["protocol"] == "confirmatory"
    assert res["config"] == lf.ForkConfig().to_dict(), "the design committed before the run"
    assert len(res["config"]["seeds"]) >= 4 and set(res["arms"]) == set(lf.DESIGN_ARMS)
    assert res["sampling"]["sampler"] == "race" and res["sampling"]["decode_loop"] == "lean"
    again = lf.claims(res)
    for got, stored in zip(again, res["claims"]):
        assert got["id"] == stored["id"] and got["verdict"] == stored["verdict"]
        assert got["diff"] == pytest.approx(stored["diff"], abs=1e-4)
        assert got["mde"] == pytest.approx(stored["mde"], abs=1e-4)
        assert {"diff", "diff_ci95", "mde", "margin", "verdict", "level"} <= set(stored)
    # the exploratory block is what lm_fork_report.exploratory computes from the stored counts
    from nudgelib.experiments.lm_fork_report import exploratory

    again = exploratory(res)
    assert [(r["a"], r["metric"]) for r in again] == [(r["a"], r["metric"])
                                                      for r in res["exploratory"]["rows"]]
    for got, stored in zip(again, res["exploratory"]["rows"]):
        assert got["diff"] == pytest.approx(stored["diff"], abs=1e-4)
        assert got["ci95_problems"] == pytest.approx(stored["ci95_problems"], abs=1e-4)
    # the superseded designs are kept and labelled
    from nudgelib.experiments.toy_nurl import load_results

    for name in ("lm_nurl_v2.json", "lm_nurl_v1_truncated.json"):
        assert load_results(name)["superseded"]["by"] == "lm_nurl.json"
