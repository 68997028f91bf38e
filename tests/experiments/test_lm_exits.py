"""nudgelib.experiments.lm_exits: the real-model exits design (fixed before its run), its
claims by hand on a hand-built result, and its ledger table. The design runs through
lm_fork.run, which CI exercises with lm_fork's own arms; ``--fast`` of this module (about
2.5 min) is run by hand before a confirmatory run."""

import numpy as np
import pytest

from nudgelib.experiments import lm_exits as le
from nudgelib.experiments import lm_fork as lf


def test_the_design_is_lm_forks_sizes_with_the_exits_as_arms():
    cfg = le.design()
    base = lf.ForkConfig().to_dict()
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("arms", "seeds")} == \
        {k: v for k, v in base.items() if k not in ("arms", "seeds")}
    assert cfg.arms == ("control", "more_samples", "dynamic", "nurl_hinted", "prefix", "sft_grpo")
    assert set(cfg.seeds).isdisjoint(base["seeds"]) and len(cfg.seeds) == 4
    assert len(le.CLAIMS) == 10 and all(c[3] == "control" for c in le.CLAIMS)
    assert {le.MARGINS[c[0]] for c in le.CLAIMS if c[4] == "chain@k"} == {0.06}
    assert {le.MARGINS[c[0]] for c in le.CLAIMS if c[4] == "chain@1"} == {0.008}
    # lm_fork's own design is unchanged by the arms added for this one
    assert lf.ForkConfig().arms == ("control", "nurl_hinted", "nurl_original", "sft_grpo")
    assert lf.ARMS["more_samples"]["group_size"] == 2 * lf.train_config(cfg, 0).group_size


def _res():
    """Held-out chain counts (n = 4, k = 2) for the control and one exit, two seeds."""
    counts = {"control": [[0, 0, 2, 4], [0, 1, 2, 4]], "dynamic": [[1, 0, 2, 4], [2, 2, 2, 4]]}
    cost = {"control": {"tokens_plain": 100, "tokens_hinted": 0, "tokens_resampled": 0,
                        "tokens_trained": 40, "model_calls": 14},
            "dynamic": {"tokens_plain": 100, "tokens_hinted": 0, "tokens_resampled": 150,
                        "tokens_trained": 60, "model_calls": 40,
                        # as if it had written hints too: its cost counts in tokens sampled
                        "tokens_hint_writing": 50, "hint_writing_calls": 3}}
    return {"config": {"seeds": [1, 2], "eval_samples": 4, "k_primary": 2},
            "fork": {"chain": [0, 0, 2, 4]},
            "arms": {a: {str(s): {"eval": {"chain": c}, "cost": cost[a]} for s, c in zip((1, 2), per)}
                     for a, per in counts.items()}}


def test_claims_are_bonferroni_over_ten_and_the_ledger_table_adds_up():
    rows = {r["id"]: r for r in le.judge_claims(_res())}
    assert set(rows) == {"dynamic_upper", "dynamic_pass1"}
    p1 = rows["dynamic_pass1"]
    diffs = [0.4375 - 0.375, 0.625 - 0.4375]  # seed means of c / 4, as in test_lm_fork
    assert p1["diff"] == pytest.approx(np.mean(diffs))
    assert p1["level"] == pytest.approx(1 - 0.05 / 10) and p1["margin"] == 0.008
    table = le.cost_table(_res())
    assert "| dynamic sampling | 300 (100 / 0 / 150 / 50) | 3.00 | 60 | 40 + 3 |" in table
    # a results file from before hint writing was booked has no entry: 0, as it was
    assert "| GRPO control, same pool | 100 (100 / 0 / 0 / 0) | 1.00 | 40 | 14 + 0 |" in table
    res = {**_res(), "claims": le.judge_claims(_res())}
    fig = le.gain_figure(res, "chain@1")
    dyn, ctrl = fig.data
    assert (dyn.x[0], dyn.y[0]) == (300, pytest.approx(p1["diff"]))  # its tokens, its gain
    lo, hi = p1["diff_ci95"]
    assert dyn.error_y.array[0] == pytest.approx(hi - p1["diff"])
    assert dyn.error_y.arrayminus[0] == pytest.approx(p1["diff"] - lo)
    assert (ctrl.x[0], ctrl.y[0]) == (100, 0.0)


def test_a_fork_may_change_the_group_size(tmp_path):
    from nudgelib.training.config import get_train_config
    from nudgelib.training.trainer import Trainer

    cfg = get_train_config("toy-table", save_every=1)
    src = Trainer(cfg, tmp_path / "src", progress=False)
    src.train(until_step=2)
    src.close()
    more = Trainer(cfg.with_overrides(group_size=16), tmp_path / "more", progress=False)
    more.fork_from(src.checkpoint_dir(2))
    more.train(until_step=3)
    assert more.rows[-1]["cost_rows_plain"] == 16 * cfg.prompts_per_step
    more.close()
