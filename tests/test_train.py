"""The trainer: config errors, exact micro-batching, learning, checkpoints, kill-and-resume, LoRA."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nudgelib.losses import aggregate, microbatch_scale
from nudgelib.rollouts import ExactMatchScorer, evaluate_pass_counts
from nudgelib.toy import addition_problems
from nudgelib.train import (
    ConfigError,
    TrainConfig,
    Trainer,
    build_policy,
    complete_checkpoints,
    get_train_config,
)

SMALL = dict(warm_start_steps=150, prompts_per_step=6, group_size=4)


@pytest.mark.parametrize("field,value,expected", [
    ("group_size", 1, "at least 2"),
    ("lr", -1.0, "a finite number > 0"),
    ("estimator", "gpro", "one of"),
    ("aggregation", "mean", "one of"),
    ("top_p", 1.5, r"\(0, 1\]"),
    ("prompts_per_step", 0, "a positive integer"),
    ("task", "gsm8k", "real math needs policy='hf'"),
    ("kl_beta", 0.1, "LoRA base model"),
])
def test_config_errors_name_the_field(field, value, expected):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}=.*{expected}"):
        TrainConfig(**{field: value})


def test_unknown_fields_and_presets_are_named():
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="unknown training preset 'tiny'"):
        get_train_config("tiny")
    assert get_train_config("cpu-fast").model_id == "offline:smollm2-135m-instruct"


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm",
                                 "token_sum"])
def test_microbatch_scale_reassembles_the_full_aggregation(agg):
    torch.manual_seed(0)
    loss = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[2] = 0  # an empty completion
    full = aggregate(loss, mask, agg, max_len=5)
    parts = sum(microbatch_scale(agg, mask[i:i + 4], mask) * aggregate(loss[i:i + 4],
                                                                        mask[i:i + 4], agg, 5)
                for i in (0, 4))
    assert float(parts) == pytest.approx(float(full), abs=1e-6)


def _grads_of_one_step(cfg, policy):
    tr = Trainer(cfg, policy=copy.deepcopy(policy), progress=False)
    row = tr.train_step()
    return [p.grad.detach().clone() for p in tr.params], row


def test_micro_batching_and_skipping_zero_advantage_rows_are_exact():
    cfg = get_train_config("toy-fast", **SMALL, micro_batch_size=1000, seed=1)
    policy = build_policy(cfg)
    ref, row = _grads_of_one_step(cfg, policy)
    assert 0 < row["rows_trained"] < 24  # some groups had zero advantage and were skipped
    for variant in (dict(micro_batch_size=3), dict(skip_zero_advantage=False)):
        got, row2 = _grads_of_one_step(cfg.with_overrides(**variant), policy)
        assert row2["reward_mean"] == row["reward_mean"]
        assert row2["loss"] == pytest.approx(row["loss"], abs=1e-7)
        # the same gradient up to float summation order (largest entries are ~1e-1)
        assert max(float(g.abs().max()) for g in ref) > 1e-3
        for a, b in zip(got, ref):
            assert torch.allclose(a, b, atol=1e-7), variant


def test_grpo_raises_the_easy_pass_rate_of_the_tiny_transformer():
    cfg = get_train_config("toy-fast")
    tr = Trainer(cfg, progress=False)
    held_out = addition_problems({"easy": 100}, seed=999)
    scorer = ExactMatchScorer()

    def easy_pass_rate():
        counts = evaluate_pass_counts(tr.policy, held_out, scorer, n_samples=16,
                                      max_new_tokens=cfg.max_new_tokens,
                                      generator=torch.Generator().manual_seed(5))
        return sum(counts) / (16 * len(held_out))

    hard = addition_problems({"hard": 50}, seed=998)
    hard_counts = evaluate_pass_counts(tr.policy, hard, scorer, n_samples=8, max_new_tokens=6,
                                       generator=torch.Generator().manual_seed(5))
    assert sum(hard_counts) == 0  # the hard end starts at 0% for the warm-started model
    before = easy_pass_rate()
    df = tr.train(until_step=80)
    after = easy_pass_rate()
    print(f"toy-fast easy pass rate: {before:.3f} -> {after:.3f} after 80 GRPO steps")
    assert 0.3 < before < 0.9
    assert after > before + 0.03
    assert set(df.columns) >= {"step", "reward_mean", "pass_rate", "frac_zero_std",
                               "learnable_ratio", "pass_rate_L1"}
    assert df["step"].tolist() == list(range(1, 81))


def test_checkpoints_are_complete_pruned_and_resumable(tmp_path):
    cfg = get_train_config("toy-fast", **SMALL, save_every=1, keep_checkpoints=2)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train(until_step=3)
    ckpts = complete_checkpoints(tmp_path)
    assert [c.name for c in ckpts] == ["step-000002", "step-000003"]
    assert {p.name for p in ckpts[-1].iterdir()} >= {"policy", "trainer_state.pt",
                                                     "config.json", "COMPLETE"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # a config that changes the trajectory cannot resume this run
    other = Trainer(cfg.with_overrides(lr=1.0), tmp_path, progress=False, warm=False)
    with pytest.raises(ConfigError, match=r"lr \(checkpoint 0.0003, now 1.0\)"):
        other.load_checkpoint(ckpts[-1])


def _cli(out, *extra, steps=4):
    return [sys.executable, "-m", "nudgelib.train", "--config", "toy-fast", "--steps", str(steps),
            "--out", str(out), "--seed", "3", "--quiet", "--set", "warm_start_steps=50",
            "--set", "group_size=48", *extra]


def _rows(out):
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_sigkill_after_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "NUDGE_FAST": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cli(full), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(killed, "--save-every", "2"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "step-000002" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never wrote its step-2 checkpoint"
    # the kill landed between the step-2 and the step-4 checkpoint: the test is not vacuous
    assert not (killed / "checkpoints" / "step-000004").exists()
    assert max(_rows(killed)) < 4

    res = subprocess.run(_cli(killed, "--save-every", "2", "--resume"), env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout and "step-000002" in res.stdout
    a, b = _rows(full), _rows(killed)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("reward_mean", "pass_rate", "frac_zero_std"):
            assert b[step][key] == a[step][key], (step, key)
    # steps 1-2 come from the first process and match as well
    assert [b[s]["reward_mean"] for s in (1, 2)] == [a[s]["reward_mean"] for s in (1, 2)]


def test_cli_refuses_to_overwrite_and_names_bad_overrides(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    res = subprocess.run(_cli(tmp_path / "run"), capture_output=True, text=True)
    assert res.returncode == 2 and "already holds a run; pass --resume" in res.stderr
    res = subprocess.run(_cli(tmp_path / "new", "--set", "group_size=one"), capture_output=True,
                         text=True)
    assert res.returncode == 2 and "TrainConfig.group_size='one'" in res.stderr
    assert not (tmp_path / "new").exists()


def test_three_cpu_fast_steps_change_every_lora_weight_and_no_base_weight(tmp_path,
                                                                          offline_model_dir):
    from peft import PeftModel

    cfg = get_train_config("cpu-fast")
    tr = Trainer(cfg, tmp_path, progress=False)
    named = dict(tr.policy.model.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    lora = [n for n, p in named.items() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    df = tr.train(until_step=3)
    print(df[["step", "reward_mean", "pass_rate", "frac_zero_std", "rows_trained",
              "t_sample", "t_train"]].to_string())
    assert (df["rows_trained"] > 0).sum() >= 2, "too few steps with reward variance"
    for n, p in named.items():
        changed = not torch.equal(p.detach(), before[n])
        assert changed == (n in lora), n
    adapter = complete_checkpoints(tmp_path)[-1] / "policy"
    assert (adapter / "adapter_config.json").is_file()
    # the checkpoint is a standard PEFT adapter: peft loads it onto a fresh base model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(offline_model_dir)
    loaded = PeftModel.from_pretrained(base, adapter)
    ours = {n.replace(".default", ""): p for n, p in named.items() if n in lora}
    theirs = {n.replace(".default", ""): p for n, p in loaded.named_parameters() if "lora_" in n}
    assert ours.keys() == theirs.keys()
    for n in ours:
        assert torch.equal(ours[n].detach(), theirs[n].detach()), n


# ----------------------------------------------------------------------------- nudging

def test_cli_nurl_on_toy_fast_nudges_a_zero_pass_group_within_4_steps(tmp_path):
    out = tmp_path / "nurl"
    res = subprocess.run([sys.executable, "-m", "nudgelib.train", "--config", "toy-fast",
                          "--nudging", "nurl", "--steps", "4", "--out", str(out), "--quiet"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = _rows(out)
    assert sorted(rows) == [1, 2, 3, 4]
    assert any(rows[s]["frac_nudged"] > 0 for s in rows)
    for r in rows.values():
        # only groups with no hint-free success are nudged
        assert r["frac_nudged"] <= 1 - r["learnable_ratio"] + 1e-9
        assert (r["hinted_pass_rate"] is not None) == (r["frac_nudged"] > 0)
        assert r["pass_rate_L3"] == 0.0  # hard sums are 0/G without a hint: the trigger's case


def _table(**kw):
    return get_train_config("toy-table", nudging="nurl", hint_type="partial_steps", seed=1,
                            **kw)


def test_two_stage_switch_drops_solved_problems_and_resumes_exactly(tmp_path):
    cfg = _table(stage1="steps", stage1_steps=2, save_every=1, keep_checkpoints=0)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    df = full.train(until_step=5)
    assert df["stage"].tolist() == [1, 1, 2, 2, 2]
    assert (df["frac_nudged"][:2] == 0).all() and df["frac_nudged"][2:].max() > 0
    switch = df.iloc[1]
    assert switch["stage_switch"] and switch["dropped_solved"] >= 1  # easy ones are 8/8
    assert df["n_problems"].tolist()[2:] == [24 - switch["dropped_solved"]] * 3
    assert len(full.problems) == 24 - switch["dropped_solved"]
    # resume from the step-3 checkpoint: same problems, stage and trajectory
    again = Trainer(cfg, tmp_path / "full", progress=False)
    again.load_checkpoint(complete_checkpoints(tmp_path / "full")[2])
    assert again.step == 3 and again.stage == 2
    assert [p.id for p in again.problems] == [p.id for p in full.problems]
    redo = again.train(until_step=5)
    for key in ("reward_mean", "frac_nudged", "hinted_pass_rate", "pass_rate"):
        assert redo[key].fillna(-1).tolist() == df[key].fillna(-1).tolist(), key


def test_plateau_switch_happens_where_the_logged_metric_says(tmp_path):
    cfg = _table(stage1="plateau", plateau_patience=2, plateau_window=2, stage1_steps=30,
                 plateau_min_delta=0.03, drop_solved_samples=0)
    df = Trainer(cfg, progress=False).train(until_step=12)
    best, since, fired_at = float("-inf"), 0, None
    vals = df["reward_mean"].tolist()
    for i in range(len(vals)):  # the detector's rule, recomputed from the metrics
        avg = sum(vals[max(0, i - 1):i + 1]) / len(vals[max(0, i - 1):i + 1])
        best, since = (avg, 0) if avg > best + 0.03 else (best, since + 1)
        if since >= 2:
            fired_at = i + 1
            break
    assert fired_at is not None and fired_at < 12
    assert df["stage"].tolist() == [1] * fired_at + [2] * (12 - fired_at)


@pytest.mark.parametrize("name", ["scaf", "nudgerl", "always"])
def test_each_strategy_trains_through_the_trainer(name):
    cfg = get_train_config("toy-table", nudging=name, seed=2)
    tr = Trainer(cfg, progress=False)
    before = [p.detach().clone() for p in tr.params]
    df = tr.train(until_step=2)
    assert df["frac_nudged"].max() > 0
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, tr.params))
    if name == "always":
        assert (df["frac_nudged"] == 1).all() and df["pass_rate"].isna().all()
    if name == "nudgerl":
        assert df["aux_loss"].abs().max() > 0  # the distillation term reached the loss
        assert df["pass_rate"].notna().all()  # measured on the rollouts that dropped context


def test_nudging_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="TrainConfig.nudging='nrl'"):
        get_train_config("toy-fast", nudging="nrl")
    with pytest.raises(ConfigError, match="TrainConfig.stage1='plateau'.*nudging='none'"):
        get_train_config("toy-fast", stage1="plateau")
    with pytest.raises(ConfigError, match="TrainConfig.nudging_options: nudging strategy 'nurl'"):
        Trainer(get_train_config("toy-table", nudging="nurl", nudging_options={"tiers": [1]}),
                progress=False)
    with pytest.raises(ConfigError, match="hint_bank='/nope'"):
        Trainer(get_train_config("toy-table", nudging="nurl", hint_bank="/nope"), progress=False)


def test_lm_run_writes_self_hints_before_training_and_reuses_them(tmp_path, offline_model_dir,
                                                                    real_data):
    real_data("gsm8k", "train", limit=1)  # skips (naming NUDGE_DATA_DIR) without real data
    cfg = get_train_config("cpu-fast", nudging="nurl", n_train_problems=2, prompts_per_step=2,
                           group_size=4, max_new_tokens=16)
    tr = Trainer(cfg, tmp_path, progress=False)
    bank = tr.nudger.hint_source  # built from out/hint_bank, written by the untrained policy
    saved = tmp_path / "hint_bank"
    assert saved.is_dir()
    from nudgelib.hints import HintBank

    stored = HintBank.load(saved)
    assert {r["problem_id"] for r in stored.records()} <= {p.id for p in tr.problems}
    assert all(r["source"] == "self" and r["hint_type"] == "abstract" for r in stored.records())
    assert all(bank(p, "abstract") == stored.lookup(p.id) for p in tr.problems)
    df = tr.train(until_step=1)
    assert df["frac_nudged"].iloc[0] <= 1 - df["learnable_ratio"].iloc[0] + 1e-9
    # a resumed run reads the bank instead of writing it again
    mtime = saved.stat().st_mtime_ns
    again = Trainer(cfg, tmp_path, progress=False, warm=False)
    assert saved.stat().st_mtime_ns == mtime
    assert [again.nudger.hint_source(p, "abstract") for p in again.problems] == \
        [bank(p, "abstract") for p in tr.problems]
