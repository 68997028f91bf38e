"""Evaluation: pass@k with intervals, paired differences by hand, adapters switched on one base."""

import pytest
import torch

from nudgelib.evaluate import (
    ModelSuite,
    evaluate_pass_at_k,
    paired_difference,
    pass_at_k_figure,
    results_frame,
    save_results,
)
from nudgelib.tasks.rewards import ExactMatchScorer
from nudgelib.training.build import build_policy, build_problems
from nudgelib.training.config import get_train_config
from nudgelib.ui.plots import figure_has_data


def _result(counts, n, ids=None):
    from nudgelib.core.stats import per_problem_pass_at_k

    ks = [1, n]
    per = per_problem_pass_at_k([(n, c) for c in counts], ks)
    return {"ks": ks, "pass_at_k": dict(zip(ks, per.mean(0))), "ci95": {k: (0, 1) for k in ks},
            "counts": counts, "problem_ids": ids or [f"p{i}" for i in range(len(counts))],
            "n_samples": n}


def test_paired_difference_by_hand():
    a, b = _result([2, 0, 1, 0], 2), _result([0, 0, 1, 0], 2)
    # pass@1 per problem: a = [1, 0, .5, 0], b = [0, 0, .5, 0] -> mean difference 0.25
    d = paired_difference(a, b, 1)
    assert d["diff"] == pytest.approx(0.25)
    lo, hi = d["ci95"]
    assert 0 <= lo <= 0.25 <= hi <= 1  # resamples of [1, 0, 0, 0]: means in {0, .25, ...}
    # pass@2: a = [1, 0, 1, 0], b = [0, 0, 1, 0] -> 0.25 too
    assert paired_difference(a, b, 2)["diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same problems"):
        paired_difference(a, _result([0, 0, 1, 0], 2, ids=list("abcd")), 1)
    with pytest.raises(ValueError, match="k=4 exceeds"):
        paired_difference(a, b, 4)


def test_evaluate_pass_at_k_on_the_toy_matches_the_hand_formula(tmp_path):
    cfg = get_train_config("toy-table", seed=0)
    policy, probs = build_policy(cfg), build_problems(cfg)[:8]
    r = evaluate_pass_at_k(policy, probs, ExactMatchScorer(), n_samples=4, temperature=1.0,
                           max_new_tokens=cfg.max_new_tokens, seed=3)
    assert r["ks"] == [1, 2, 4] and len(r["counts"]) == 8
    c = r["counts"]
    assert r["pass_at_k"][1] == pytest.approx(sum(x / 4 for x in c) / 8)
    # pass@2 with n = 4: 1 - C(4 - c, 2) / C(4, 2)
    from math import comb
    assert r["pass_at_k"][2] == pytest.approx(sum(1 - comb(4 - x, 2) / 6 for x in c) / 8)
    assert r["pass_at_k"][4] == pytest.approx(sum(x > 0 for x in c) / 8)
    for k in r["ks"]:
        lo, hi = r["ci95"][k]
        assert lo <= r["pass_at_k"][k] <= hi
    again = evaluate_pass_at_k(policy, probs, ExactMatchScorer(), n_samples=4, temperature=1.0,
                               max_new_tokens=cfg.max_new_tokens, seed=3)
    assert again["counts"] == c, "same seed, same samples"
    res = {"toy": {"base": r, "again": again}}
    df = results_frame(res)
    assert len(df) == 6 and set(df["model"]) == {"base", "again"}
    assert figure_has_data(pass_at_k_figure(res["toy"]))
    assert save_results(res, tmp_path / "r.json", note="x").is_file()
    with pytest.raises(ValueError, match="at least 2 problems"):
        evaluate_pass_at_k(policy, probs[:1], ExactMatchScorer(), n_samples=4)
    with pytest.raises(ValueError, match="every k must be in"):
        evaluate_pass_at_k(policy, probs, ExactMatchScorer(), n_samples=4, ks=[8])


def test_model_suite_switches_adapters_on_one_base(tmp_path, offline_model_dir):
    from nudgelib.policies.hf import HFPolicy
    from nudgelib.presets import OFFLINE_SMOLLM2

    trained = HFPolicy.from_pretrained(OFFLINE_SMOLLM2, lora_rank=4)
    with torch.no_grad():
        for n, p in trained.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    trained.save(tmp_path / "a")
    plain = HFPolicy.from_pretrained(OFFLINE_SMOLLM2, lora_rank=0)
    with pytest.raises(FileNotFoundError, match=r"adapters\['x'\].*adapter_config.json"):
        ModelSuite(OFFLINE_SMOLLM2, {"x": tmp_path})
    suite = ModelSuite(OFFLINE_SMOLLM2, {"trained": tmp_path / "a"})
    assert suite.names == ["base", "trained"]
    ids = plain.encode_prompts(["What is 2+3?"])
    from nudgelib.policies.base import left_pad

    pid, pm = left_pad(ids, plain.pad_id)
    comp = torch.tensor([[28, 330, 1250, 30, 2]])
    cm = torch.ones_like(comp, dtype=torch.bool)

    def lp(pol):
        with torch.no_grad():
            return pol.logprobs(pid, pm, comp, cm)

    with suite.use("base") as pol:
        assert torch.allclose(lp(pol), lp(plain), atol=1e-5)
    with suite.use("trained") as pol:
        got = lp(pol)
    assert torch.allclose(got, lp(trained), atol=1e-5)
    assert not torch.allclose(got, lp(plain), atol=1e-3), "the adapter changes the model"
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        with suite.use("nope"):
            pass


def test_disabled_adapter_samples_the_base_model_exactly(offline_model_dir):
    """Regression (found by notebook 07 on arithmetic): inside ``disable_adapter()`` the sampler
    folded the active LoRA delta into the weights anyway, so a suite's "base" sampled the
    adapter. With the adapter off, samples must equal a model without LoRA, draw for draw."""
    import torch

    from nudgelib.policies.hf import HFPolicy

    kw = dict(instruction="Answer with the final number only.", stop_at_newline=True)
    lora = HFPolicy.from_pretrained("offline:smollm2-135m-instruct", lora_rank=4, **kw)
    plain = HFPolicy.from_pretrained("offline:smollm2-135m-instruct", lora_rank=0, **kw)
    with torch.no_grad():
        for n, p in lora.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a trained-looking adapter

    def draw(policy):
        return policy.sample(["What is 2 + 3?", "What is 4 * 6?"], group_size=4,
                             max_new_tokens=12, generator=torch.Generator().manual_seed(0)).texts

    with lora.model.disable_adapter():
        assert draw(lora) == draw(plain)
    assert draw(lora) != draw(plain), "the adapter changes the samples when it is on"
