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

from nudgelib.core.losses import aggregate, microbatch_scale
from nudgelib.nudging import NuRL
from nudgelib.rollouts import evaluate_pass_counts
from nudgelib.tasks.addition import addition_problems
from nudgelib.tasks.problems import Problem
from nudgelib.tasks.rewards import ExactMatchScorer
from nudgelib.training.build import build_policy
from nudgelib.training.config import ConfigError, TrainConfig, get_train_config
from nudgelib.training.trainer import Trainer, complete_checkpoints

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
    return [sys.executable, "-m", "nudgelib.training", "--config", "toy-fast", "--steps", str(steps),
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


def test_cli_cpu_fast_nurl_two_steps_saves_a_peft_adapter_with_every_lora_weight_trained(
        tmp_path, offline_model_dir):
    """The issue-8 command verbatim (cpu-fast is arithmetic since issue 19): the teacher hints
    are written to DIR/hint_bank, two NuRL steps train, and DIR/adapter is a standard PEFT
    adapter whose every LoRA tensor moved from its (seeded) initial value; the base weights are
    frozen by construction (only lora_ tensors train)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "nudgelib.training", "--config", "cpu-fast",
                          "--nudging", "nurl", "--steps", "2", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"CLI cpu-fast nurl 2 steps: {time.time() - t0:.0f} s")
    rows = _rows(out)
    assert sorted(rows) == [1, 2] and all(r["stage"] == 2 for r in rows.values())
    assert (out / "hint_bank").is_dir()
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(offline_model_dir),
                                       adapter)
    trained = {n.replace(".default", ""): p for n, p in loaded.named_parameters() if "lora_" in n}
    init = build_policy(get_train_config("cpu-fast"))  # same seed: the same LoRA initialisation
    named = dict(init.model.named_parameters())
    assert {n for n, p in named.items() if p.requires_grad} == {n for n in named if "lora_" in n}
    start = {n.replace(".default", ""): p for n, p in named.items() if "lora_" in n}
    assert trained.keys() == start.keys() and len(trained) > 0
    for n in trained:
        assert not torch.equal(trained[n].detach(), start[n].detach()), n


# ----------------------------------------------------------------------------- nudging

def test_cli_nurl_on_toy_fast_nudges_a_zero_pass_group_within_4_steps(tmp_path):
    out = tmp_path / "nurl"
    res = subprocess.run([sys.executable, "-m", "nudgelib.training", "--config", "toy-fast",
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


@pytest.mark.parametrize("name", ["nurl", "scaf", "nudgerl", "always"])
def test_each_strategy_trains_through_the_trainer(name):
    cfg = get_train_config("toy-table", nudging=name, seed=2)
    tr = Trainer(cfg, progress=False)
    before = [p.detach().clone() for p in tr.params]
    df = tr.train(until_step=2)
    assert df["frac_nudged"].max() > 0
    # what the nudge produced is logged per step: hinted successes and their hint reliance
    assert (df["hinted_successes"] >= 0).all() and df["hinted_successes"].max() > 0
    ok = df["hinted_successes"] > 0
    assert df.loc[ok, "hint_reliance"].notna().all() and df.loc[~ok, "hint_reliance"].isna().all()
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
    with pytest.raises(ConfigError, match=r"TrainConfig.nudging_options=\{'tiers': \[1\]\} is "
                                          r"invalid; expected keyword arguments of NuRL"):
        get_train_config("toy-table", nudging="nurl", nudging_options={"tiers": [1]})
    with pytest.raises(ConfigError, match="hint_bank='/nope'"):
        Trainer(get_train_config("toy-table", nudging="nurl", hint_bank="/nope"), progress=False)


def test_a_strategy_that_sets_its_own_advantages_refuses_a_named_estimator():
    with pytest.raises(ConfigError, match="TrainConfig.estimator='rloo'.*nudging='nudgerl'"):
        get_train_config("toy-table", nudging="nudgerl", estimator="rloo")
    with pytest.raises(ConfigError, match="TrainConfig.estimator='grpo'.*estimator_options"):
        get_train_config("toy-table", nudging="nudgerl", estimator_options={"eps": 0.1})
    # a two-stage run uses the estimator in stage 1, so it may name one
    cfg = get_train_config("toy-table", nudging="nudgerl", estimator="rloo", stage1="steps",
                           stage1_steps=1)
    assert cfg.estimator == "rloo"


class _Recorder(NuRL):
    """NuRL that records what the trainer hands it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = []

    def sample(self, problems, ctx):
        self.seen.append(("sample", type(ctx).__name__, ctx.step))
        return None

    def nudge(self, batch, ctx):
        self.seen.append(("nudge", type(ctx).__name__, ctx.step))
        return super().nudge(batch, ctx)


def test_the_trainer_hands_a_strategy_a_sampling_context_and_logs_its_resampling(tmp_path):
    from nudgelib.toy import toy_hint

    cfg = get_train_config("toy-table", nudging="nurl", seed=1)
    rec = _Recorder(toy_hint, hint_type=cfg.hint_type)
    tr = Trainer(cfg, tmp_path / "run", nudger=rec, progress=False)
    df = tr.train(until_step=2)
    assert rec.seen == [("sample", "SamplingContext", 1), ("nudge", "SamplingContext", 1),
                        ("sample", "SamplingContext", 2), ("nudge", "SamplingContext", 2)]
    # NuRL re-samples G - 1 rows of every nudged group, and nothing else
    nudged = (df["frac_nudged"] * cfg.prompts_per_step).round().astype(int)
    assert (nudged > 0).all()
    assert df["rows_resampled"].tolist() == (nudged * (cfg.group_size - 1)).tolist()
    assert (df["t_resample"] > 0).all()
    with pytest.raises(TypeError, match="does not implement nudgelib.nudging.Nudger"):
        Trainer(cfg, nudger=lambda trainer, batch: batch, progress=False)


def test_callbacks_run_before_the_metrics_row_is_written(tmp_path):
    def add_column(trainer, row, batch):
        row["callback_rows"] = len(batch)

    cfg = get_train_config("toy-table", seed=0)
    Trainer(cfg, tmp_path / "run", callbacks=[add_column], progress=False).train(until_step=2)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["callback_rows"] for r in rows] == [cfg.prompts_per_step * cfg.group_size] * 2


def test_lm_run_writes_self_hints_before_training_and_reuses_them(tmp_path, offline_model_dir):
    cfg = get_train_config("cpu-fast", nudging="nurl", hint_source="self", hint_type="abstract",
                           difficulty_counts={"chain": 2}, prompts_per_step=2, group_size=4,
                           max_new_tokens=8)
    tr = Trainer(cfg, tmp_path, progress=False)
    bank = tr.nudger.hint_source  # built from out/hint_bank, written by the untrained policy
    saved = tmp_path / "hint_bank"
    assert saved.is_dir()
    from nudgelib.hints.bank import HintBank

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


# ----------------------------------------------------------------------------- issue 8: fork,
# validation, plateau on several metrics, the two-run pipeline

def test_find_plateau_by_hand():
    from nudgelib.training.pipeline import find_plateau

    rows = [{"step": i + 1, "reward_mean": v} for i, v in enumerate([0.1, 0.2, 0.2, 0.2, 0.2])]
    # window 1, patience 2: best 0.2 at step 2, no improvement at steps 3 and 4 -> fires at 4
    assert find_plateau(rows, patience=2, window=1) == 4
    assert find_plateau(rows, patience=5, window=1) is None
    assert find_plateau(rows, patience=5, window=1, max_step=3) == 3
    # a second metric logged only at steps 2 and 4 (val 0.5 then 0.4): its best is at step 2,
    # so with patience 1 (in steps) both have plateaued at step 3, not only at its next log
    for r, v in zip(rows[1::2], [0.5, 0.4]):
        r["val_pass_rate"] = v
    assert find_plateau(rows, ["reward_mean", "val_pass_rate"], patience=1, window=1) == 3
    assert find_plateau(rows, ["reward_mean", "val_pass_rate"], patience=2, window=1) == 4
    assert find_plateau(rows, "reward_mean", patience=1, window=1) == 3


def test_find_plateau_fires_by_step_25_with_validation_every_5_steps():
    """Issue 20's acceptance case: metrics flat from step 1, validation every 5 steps,
    patience 10, window 5. Counting logged values, validation needed 11 of them (step 55)."""
    from nudgelib.training.pipeline import find_plateau

    rows = [{"step": s, "reward_mean": 0.3, **({"val_pass_rate": 0.2} if s % 5 == 0 else {})}
            for s in range(1, 101)]
    got = find_plateau(rows, ["reward_mean", "val_pass_rate"], patience=10, window=5)
    assert got == 15  # reward's best at 1 (fires at 11), validation's at 5 (fires at 15)
    assert got <= 25


def test_fork_from_a_grpo_checkpoint_equals_the_two_stage_run(tmp_path):
    """NuRL forked from the GRPO run's step-2 checkpoint is the same run, number for number, as
    one two-stage run that switches at step 2 (same RNG, data order, drop-solved draws)."""
    grpo_cfg = get_train_config("toy-table", seed=1, save_every=1, keep_checkpoints=0)
    grpo = Trainer(grpo_cfg, tmp_path / "grpo", progress=False)
    grpo.train(until_step=3)
    fork = Trainer(_table(), tmp_path / "nurl", progress=False)
    info = fork.fork_from(complete_checkpoints(tmp_path / "grpo")[1])
    assert info["step"] == 2 and info["stage_switch"] and info["dropped_solved"] >= 1
    assert fork.step == 2 and fork.stage == 2 and [r["step"] for r in fork.rows] == [1, 2]
    assert json.loads((tmp_path / "nurl" / "fork.json").read_text())["step"] == 2
    forked = fork.train(until_step=4)
    two_stage = Trainer(_table(stage1="steps", stage1_steps=2), progress=False).train(
        until_step=4)
    for key in ("reward_mean", "frac_nudged", "hinted_pass_rate", "pass_rate", "n_problems"):
        assert forked[key].fillna(-1).tolist() == two_stage[key].fillna(-1).tolist(), key
    # the forked history is the GRPO run's
    assert forked["reward_mean"][:2].tolist() == grpo.metrics["reward_mean"][:2].tolist()
    # a fork may change what happens next, never what the state was made of
    with pytest.raises(ConfigError, match="cannot fork from .*lr"):
        Trainer(_table(lr=0.5), progress=False).fork_from(complete_checkpoints(tmp_path / "grpo")[1])


def test_forks_share_one_pool_and_a_new_seed_reseeds_sampling(tmp_path):
    """A forked comparison: one pool computed once at the fork, given to a GRPO control and a
    NuRL arm (nothing is dropped again; the control trains on the same pool); with the same
    seed both draw the same hint-free samples at the first step after the fork (common random
    numbers), and a fork with another seed draws others."""
    grpo_cfg = get_train_config("toy-table", seed=1, save_every=1, keep_checkpoints=0)
    Trainer(grpo_cfg, tmp_path / "grpo", progress=False).train(until_step=2)
    ckpt = complete_checkpoints(tmp_path / "grpo")[-1]
    problems = Trainer(grpo_cfg, progress=False).problems
    pool = problems[::2]
    arms = {}
    for name, cfg in {"control": get_train_config("toy-table", seed=1),
                      "nurl": _table(), "control_s7": get_train_config("toy-table", seed=7)
                      }.items():
        tr = Trainer(cfg, tmp_path / name, progress=False, problems=problems)
        info = tr.fork_from(ckpt, pool=pool)
        assert info["pool"] == len(pool) and [p.id for p in tr.problems] == [p.id for p in pool]
        assert info.get("dropped_solved", 0) == 0  # the shared pool, not a new drop
        assert info.get("reseeded") == (7 if name == "control_s7" else None)
        tr.train(until_step=3)
        assert all(pid in {p.id for p in pool} for pid in [p.id for p in tr.last_batch.problems])
        arms[name] = tr
    assert arms["control"].stage == 1 and arms["nurl"].stage == 2
    row = {n: t.rows[-1] for n, t in arms.items()}
    assert row["control"]["pass_rate"] == row["nurl"]["pass_rate"]  # same draws before nudging
    a, b = arms["control"].last_batch, arms["control_s7"].last_batch
    assert not torch.equal(a.completion_ids, b.completion_ids) or a.problems != b.problems
    with pytest.raises(ConfigError, match="fork_from pool"):
        Trainer(_table(), progress=False, problems=problems).fork_from(
            ckpt, pool=[Problem(id="nope", question="p0", answer="1")])


def test_grpo_then_nurl_pipeline_switches_at_the_cap_and_exports_both_adapters(tmp_path):
    from nudgelib.training.pipeline import grpo_then_nurl

    cfg = _table()
    res = grpo_then_nurl(cfg, tmp_path, steps=4, max_switch_step=2)
    assert res["switch_step"] == 2
    assert res["grpo"].metrics["stage"].tolist() == [1] * 4
    assert res["grpo"].metrics["frac_nudged"].max() == 0
    nurl = res["nurl"].metrics
    assert nurl["step"].tolist() == [1, 2, 3, 4] and nurl["frac_nudged"][2:].min() > 0
    for run in ("grpo", "nurl"):
        assert (tmp_path / run / "adapter").is_dir()
    # running it again resumes both runs instead of training anew
    again = grpo_then_nurl(cfg, tmp_path, steps=4, max_switch_step=2)
    assert again["nurl"].metrics["reward_mean"].tolist() == nurl["reward_mean"].tolist()


def test_validation_is_held_out_and_never_shifts_the_training_samples():
    from nudgelib.training.build import build_val_problems

    cfg = get_train_config("toy-fast", seed=3, **SMALL)
    val_cfg = cfg.with_overrides(val_every=1, n_val_problems=9, val_samples=2)
    val = build_val_problems(val_cfg)
    train_q = {p.question for p in Trainer(cfg, progress=False, warm=False).problems}
    assert len(val) == 9 and not train_q & {p.question for p in val}
    assert sorted({p.level for p in val}) == [1, 2, 3]
    plain = Trainer(cfg, progress=False).train(until_step=2)
    with_val = Trainer(val_cfg, progress=False).train(until_step=2)
    assert with_val["reward_mean"].tolist() == plain["reward_mean"].tolist()
    assert with_val["val_pass_rate"].between(0, 1).all()
    with pytest.raises(ConfigError, match="plateau_metric.*val_every=0"):
        get_train_config("toy-table", nudging="nurl", stage1="plateau",
                         plateau_metric=["reward_mean", "val_pass_rate"])


def test_plateau_on_reward_and_validation_switches_where_find_plateau_says():
    from nudgelib.training.pipeline import find_plateau

    cfg = get_train_config("toy-fast", seed=3, nudging="nurl", stage1="plateau",
                           plateau_metric=["reward_mean", "val_pass_rate"], plateau_patience=1,
                           plateau_window=1, val_every=2, n_val_problems=6, val_samples=2,
                           drop_solved_samples=0, **SMALL)
    df = Trainer(cfg, progress=False).train(until_step=8)
    rows = df.to_dict("records")
    rows = [{k: v for k, v in r.items() if v == v} for r in rows]  # NaN: not logged that step
    expected = find_plateau(rows, ["reward_mean", "val_pass_rate"], patience=1, window=1)
    switch = df.index[df["stage_switch"].fillna(False).astype(bool)].tolist() \
        if "stage_switch" in df else []
    # this seed: reward best at step 1 (fires at 2); validation (steps 2, 4, ...) best at step
    # 2, so with patience 1 step it fires at step 3, a step that logged no validation
    assert expected == 3
    assert [df["step"][i] for i in switch] == [expected]
    assert df["val_pass_rate"].notna().tolist() == [s % 2 == 0 for s in df["step"]]


def test_real_math_validation_problems_follow_the_training_problems(real_data):
    from nudgelib.training.build import build_problems, build_val_problems

    real_data("gsm8k", "train", limit=1)
    cfg = get_train_config("cpu-fast", task="gsm8k", problem_selection="shortest",
                           n_train_problems=16, val_every=1, n_val_problems=5)
    train, val = build_problems(cfg), build_val_problems(cfg)
    assert len(val) == 5 and not {p.id for p in train} & {p.id for p in val}
    assert max(len(p.question) for p in train) <= min(len(p.question) for p in val)


@pytest.mark.parametrize("item,expected", [
    ("top_p=abc", r"TrainConfig\.top_p='abc' is invalid; expected a number in \(0, 1\]"),
    ("lr=true", r"TrainConfig\.lr=True is invalid; expected a finite number > 0"),
    ("lr=null", r"TrainConfig\.lr=null is invalid"),
    ('estimator_options={"bogus": 1}', r"estimator_options=.*keyword arguments of grpo: "
                                       r"\['eps', 'unbiased'\] \(unknown: \['bogus'\]\)"),
    ('nudging_options={"nope": 1}', r"nudging_options=.*\(unknown: \['nope'\]\)"),
])
def test_cli_values_are_checked_when_the_config_is_built(item, expected, tmp_path):
    """Issue 22: wrong values are named (field and expected form) before anything runs."""
    from nudgelib.training.cli import build_parser, config_from_args

    argv = ["--config", "toy-fast", "--steps", "1", "--out", str(tmp_path / "x"), "--set", item]
    if item.startswith("nudging_options"):
        argv += ["--nudging", "nurl"]
    with pytest.raises(ConfigError, match=expected):
        config_from_args(build_parser().parse_args(argv))
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text('{"lr": null}')
    with pytest.raises(ConfigError, match=r"TrainConfig\.lr=null is invalid"):
        TrainConfig.from_dict(json.loads(cfg_file.read_text()))


def test_sampling_switches_are_recorded_fields_resolved_by_policy(monkeypatch):
    """sampler / fast_decode / pack_weights: explicit fields, resolved on creation (the
    environment only overrides the language model's defaults, strictly) and kept resolved,
    so a run's config.json says how its tokens were drawn."""
    for var in ("NUDGE_SAMPLER", "NUDGE_FAST_DECODE", "NUDGE_PACK_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    lm = get_train_config("cpu-fast")
    assert lm.sampling() == {"sampler": "race", "fast_decode": True, "pack_weights": True}
    assert get_train_config("toy-fast").sampling() == {"sampler": "cdf", "fast_decode": False,
                                                       "pack_weights": False}
    assert get_train_config("toy-table").sampler == "multinomial"
    monkeypatch.setenv("NUDGE_SAMPLER", "cdf")
    monkeypatch.setenv("NUDGE_FAST_DECODE", "off")  # once silently read as "on"
    monkeypatch.setenv("NUDGE_PACK_WEIGHTS", "false")
    assert get_train_config("cpu-fast").sampling() == {"sampler": "cdf", "fast_decode": False,
                                                       "pack_weights": False}
    assert lm.with_overrides(lr=1e-4).sampling() == lm.sampling()  # resolved values are kept
    assert get_train_config("toy-fast").sampler == "cdf"  # the environment is the LM's only
    # a toy config turned into an LM config is resolved again for the LM
    hf = get_train_config("toy-fast").with_overrides(policy="hf", task="arithmetic",
                                                     model_id="x", difficulty_counts={"sum": 1})
    assert hf.sampling() == {"sampler": "cdf", "fast_decode": False, "pack_weights": False}
    monkeypatch.setenv("NUDGE_FAST_DECODE", "fasle")
    with pytest.raises(ConfigError, match="NUDGE_FAST_DECODE='fasle'"):
        get_train_config("cpu-fast")
    monkeypatch.setenv("NUDGE_FAST_DECODE", "1")
    monkeypatch.setenv("NUDGE_SAMPLER", "greedy")
    with pytest.raises(ConfigError, match="NUDGE_SAMPLER='greedy'"):
        get_train_config("cpu-fast")
    with pytest.raises(ConfigError, match=r"TrainConfig.sampler='greedy'"):
        get_train_config("toy-fast", sampler="greedy")
    with pytest.raises(ConfigError, match=r"TrainConfig.sampler='race'.*multinomial"):
        get_train_config("toy-table", sampler="race")
    with pytest.raises(ConfigError, match=r"TrainConfig.fast_decode=True.*toy policies"):
        get_train_config("toy-fast", fast_decode=True)


def test_the_char_transformer_draws_with_the_configured_sampler():
    """build_policy hands TrainConfig.sampler to the policy: the two samplers draw different
    tokens from one generator, and the policy reports the sampler it used."""
    cfgs = [get_train_config("toy-fast", warm_start_steps=0, sampler=s) for s in ("cdf", "race")]
    drawn = []
    for cfg in cfgs:
        pol = build_policy(cfg, warm=False)
        assert pol.sampling_info()["sampler"] == cfg.sampler
        s = pol.sample(["12+34="] * 64, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
        drawn.append(s.completion_ids)
    assert not torch.equal(*drawn)


def test_a_run_config_names_its_sampler(tmp_path):
    """The CLI's config.json and every checkpoint's config.json carry the resolved switches;
    resuming under a different sampler is refused, naming the field."""
    from nudgelib.training.cli import main

    out = tmp_path / "run"
    assert main(["--config", "toy-table", "--steps", "1", "--out", str(out), "--quiet"]) == 0
    for f in (out / "config.json", *out.glob("checkpoints/step-*/config.json")):
        assert json.loads(f.read_text())["sampler"] == "multinomial", f
    out = tmp_path / "char"
    args = ["--config", "toy-fast", "--steps", "1", "--out", str(out), "--quiet",
            "--set", "warm_start_steps=0", "--set", "prompts_per_step=2"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["sampler"] == "cdf"
    assert main([*args[:3], "2", *args[4:], "--resume", "--set", "sampler=race"]) == 2
