"""The exits comparison (nudgelib.experiments.exits): its design, its ledger and its verdicts,
on the CI sizes (two pilot seeds, a few seconds)."""

import json

import pytest

from nudgelib.experiments import exits


@pytest.fixture(scope="module")
def pilot():
    return exits.run(exits.ExitsConfig.fast(), [600, 601])


def test_the_design_is_ten_comparisons_against_the_control_with_bonferroni(pilot):
    assert [c["id"] for c in pilot["claims"]] == [c[0] for c in exits.CLAIMS]
    assert len(exits.CLAIMS) == 10 and all(c["level"] == pytest.approx(1 - 0.05 / 10)
                                           for c in pilot["claims"])
    assert pilot["protocol"] == "exploration"  # pilot seeds, fast sizes
    assert exits.protocol_of(exits.ExitsConfig(), exits.CONFIRMATORY_SEEDS) == "confirmatory"
    for c in pilot["claims"]:
        lo, hi = c["diff_ci95"]
        assert lo <= c["diff"] <= hi and c["mde"] >= 0
        assert c["outcome"] == exits.OUTCOME[c["verdict"]]


def test_every_arm_spends_the_same_updates_and_its_ledger_adds_up(pilot):
    cfg = exits.ExitsConfig.fast()
    for r in pilot["per_seed"]:
        for arm, c in r["cost"].items():
            assert c["tokens_sampled"] == c["tokens_plain"] + c["tokens_hinted"] + c["tokens_resampled"]
            assert c["tokens_hint_writing"] == c["hint_writing_calls"] == 0  # built-in hints
            assert c["updates"] == (0 if arm == "base" else cfg.steps)
        g, p = cfg.group_size, cfg.prompts_per_step
        grpo = r["cost"]["grpo"]
        assert grpo["tokens_hinted"] == grpo["tokens_resampled"] == 0
        # every table-toy completion is 1-4 tokens: the first draw of G per prompt, per update
        assert g * p * cfg.steps <= grpo["tokens_plain"] <= 4 * g * p * cfg.steps
        assert r["cost"]["more_samples"]["tokens_plain"] > 1.5 * grpo["tokens_plain"]
        assert r["cost"]["dynamic"]["tokens_resampled"] > 0 and r["cost"]["dynamic"]["tokens_hinted"] == 0
        assert r["cost"]["nurl"]["tokens_hinted"] > 0 and r["cost"]["prefix"]["tokens_hinted"] > 0
        sft = r["cost"]["sft_grpo"]  # its warm-start updates sample nothing
        assert sft["model_calls"] == cfg.steps - cfg.sft_updates
        assert r["hinted_pass_rate"]["nurl"] is not None and r["hinted_pass_rate"]["grpo"] is None
        # hint reliance: hinted successes are likelier under their hint (the toy reads it)
        assert r["hint_reliance"]["nurl"] > 0 and r["hint_reliance"]["grpo"] is None


def test_boundary_crossing_by_hand():
    res = {"counts": {"base": {"hard": [0, 3, 0, 0]}, "x": {"hard": [1, 0, 0, 5]}}}
    assert exits.crossing(res, "x") == pytest.approx(2 / 3)  # of problems 0, 2, 3: 0 and 3
    res["counts"]["base"]["hard"] = [1, 1, 1, 1]
    assert exits.crossing(res, "x") is None


def test_reports_and_the_config_round_trip(pilot):
    assert exits.arms_table(pilot).count("\n") == 1 + len(pilot["hard"])
    assert exits.claims_table(pilot).count("**") == 2 * len(exits.CLAIMS)
    fig = exits.gain_figure(pilot)
    assert len(fig.data) == len(exits.EXITS) + 1
    cfg = exits.ExitsConfig.fast()
    assert exits.ExitsConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="sft_updates"):
        exits.ExitsConfig(sft_updates=200)
    with pytest.raises(ValueError, match="'grpo'"):
        exits.ExitsConfig(arms=("base", "nurl"))


def test_the_followup_is_one_comparison_at_95_percent_on_new_seeds():
    """The powered follow-up's design, fixed before its run: NuRL vs GRPO at pass@max alone,
    judged at 95 % (not Bonferroni over ten), on 40 seeds used by no other run."""
    seeds = set(exits.FOLLOWUP_SEEDS)
    assert len(seeds) == 40 and seeds.isdisjoint(exits.CONFIRMATORY_SEEDS) and seeds.isdisjoint({600, 601})
    assert exits.FOLLOWUP_CLAIMS == [("nurl_hard@max", "nurl", "hard@max")]
    assert exits.protocol_of(exits.ExitsConfig(arms=exits.FOLLOWUP_ARMS), exits.FOLLOWUP_SEEDS) == \
        "confirmatory follow-up"
    assert exits.protocol_of(exits.ExitsConfig(), exits.FOLLOWUP_SEEDS) == "exploration"
    # by hand: paired differences 0.1, 0.2, 0.3 at pass@max -> mean 0.2, t-interval at 95 %
    per_seed = [{"k": [1, 4], "hard": {"grpo": [0.0, 0.5], "nurl": [0.0, 0.5 + d]}}
                for d in (0.1, 0.2, 0.3)]
    (c,) = exits.claims(per_seed, exits.FOLLOWUP_CLAIMS)
    half = 4.302653 * 0.1 / 3 ** 0.5  # t(0.975, 2) x sd / sqrt(n)
    assert c["level"] == 0.95 and c["diff"] == pytest.approx(0.2)
    # (at the Bonferroni level of ten comparisons, t(0.9975, 2) = 14.1: an interval 3x as wide)
    assert c["diff_ci95"] == pytest.approx([0.2 - half, 0.2 + half], abs=1e-3)
