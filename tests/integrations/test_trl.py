"""NuRL inside TRL's GRPOTrainer (nudgelib.integrations.trl), on the offline SmolLM2 model.

The two model tests train for real (LoRA, CPU) and inspect the batch TRL trains on: which rows
were regenerated with the hint, under which prompt, and that everything else is untouched. The
last test runs the same code under ``accelerate launch`` with two processes (gloo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nudgelib.integrations import trl as nt
from nudgelib.tasks.problems import Problem
from nudgelib.tasks.rewards import correctness_reward
from nudgelib.tasks.verify import completion_text

G = 4
INSTRUCTION = "Answer with the final number in \\boxed{}."
SOLVED = "*"  # the gold answer of the problem the test reward counts as solved


# ----------------------------------------------------------------------------- no model

def test_hint_goes_after_the_question_and_before_the_instruction():
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"What is 2+3?\n{INSTRUCTION}"}]
    out = nt.hinted_prompt(msgs, "Count on from 2.", question="What is 2+3?")
    assert out[0] == msgs[0] and msgs[1]["content"] == f"What is 2+3?\n{INSTRUCTION}"  # a copy
    assert out[1]["content"] == f"What is 2+3?\n\nHint: Count on from 2.\n{INSTRUCTION}"
    # without the question text, the hint is appended to the last user message
    assert nt.hinted_prompt("Solve x.", "Try 1.") == "Solve x.\n\nHint: Try 1."
    assert nt.hinted_prompt(msgs, "h")[1]["content"].endswith(f"{INSTRUCTION}\n\nHint: h")
    with pytest.raises(ValueError, match="last user message"):
        nt.hinted_prompt([{"role": "user", "content": [{"type": "image"}]}], "h")


def test_trl_version_outside_the_tested_range_or_missing_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(nt.UNTESTED_ENV, raising=False)
    assert nt.check_trl("1.16.0") == "1.16.0"
    assert nt.check_trl()  # the installed TRL is in range
    for bad in ("1.13.0", "1.14.1", "1.15.0", "1.17.0", "0.29.1"):
        with pytest.raises(ImportError, match=r"tested with TRL .*nudgelib\[trl\]"):
            nt.check_trl(bad)
    monkeypatch.setenv(nt.UNTESTED_ENV, "1")
    with pytest.warns(UserWarning, match="going on"):
        nt.check_trl("1.17.0")
    monkeypatch.setitem(sys.modules, "trl", None)  # what `import trl` does when it is absent
    with pytest.raises(ImportError, match=r"not installed: pip install 'nudgelib\[trl\]'"):
        nt.check_trl()


def test_grpo_config_maps_a_preset_and_names_fields_trl_cannot_express(tmp_path):
    from nudgelib.training.config import ConfigError, get_train_config

    with pytest.raises(ConfigError, match="TrainConfig.stop_at_newline=True"):
        nt.grpo_config(get_train_config("cpu-fast"), tmp_path, max_steps=1)
    cfg = get_train_config("cpu-fast", micro_batch_size=16,  # 8 prompts x G=8, micro-batches of 16
                           stop_at_newline=False)
    args = nt.grpo_config(cfg, tmp_path, max_steps=3)
    assert (args.num_generations, args.max_completion_length) == (8, cfg.max_new_tokens)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 64
    assert args.per_device_train_batch_size <= cfg.micro_batch_size
    assert (args.loss_type, args.scale_rewards) == ("dapo", "group")  # token_mean, GRPO
    assert (args.epsilon, args.epsilon_high, args.beta) == (0.2, 0.28, 0.0)
    dr = nt.grpo_config(cfg.with_overrides(estimator="dr_grpo",
                                           aggregation="seq_mean_token_sum_norm"),
                        tmp_path, max_steps=1)
    assert (dr.loss_type, dr.scale_rewards) == ("dr_grpo", "none")
    # nudgelib's KL is not weighted by the importance ratio; TRL >= 1.16 weights it by default
    kl = nt.grpo_config(cfg.with_overrides(kl_beta=0.04), tmp_path, max_steps=1)
    assert kl.beta == 0.04 and getattr(kl, "use_bias_correction_kl", False) is False
    for field, value in (("aggregation", "token_sum"), ("estimator", "rloo"),
                         ("stage1", "plateau")):
        with pytest.raises(ConfigError, match=f"TrainConfig.{field}="):
            nt.grpo_config(cfg.with_overrides(**{field: value}), tmp_path, max_steps=1)
    with pytest.raises(ConfigError, match="num_processes=3"):
        nt.grpo_config(cfg, tmp_path, max_steps=1, num_processes=3)


def test_dataset_columns_and_hint_lookups():
    from nudgelib.hints.bank import HintBank

    probs = [Problem("p/0", "Q0?", "1"), Problem("p/1", "Q1?", "2")]
    bank = HintBank.from_records([{"problem_id": "p/1", "hint_type": "abstract", "hint": "H1"}])
    ds = nt.trl_dataset(probs, instruction=INSTRUCTION, hints=bank)
    assert ds.column_names == ["prompt", "question", "answer", "problem_id", "hint"]
    assert ds[0]["prompt"] == [{"role": "user", "content": f"Q0?\n{INSTRUCTION}"}]
    assert [r["hint"] for r in ds] == ["", "H1"]
    assert nt.trl_dataset(probs, hints={"p/0": {"abstract": "A", "answer": "1"}})["hint"] == ["A", ""]
    with pytest.raises(NotImplementedError, match="Scaf-GRPO.*nudgelib.training.trainer"):
        nt.NudgedGRPOTrainer(nudging="scaf")
    with pytest.raises(ValueError, match="expected one of"):
        nt.NudgedGRPOTrainer(nudging="sometimes")


# ----------------------------------------------------------------------------- real training

def verified_or_solved(prompts=None, completions=None, answer=None, **kw):
    """Real verification, except that the problem with gold answer '*' counts as solved.

    SmolLM2-135M solves no GSM8K problem in 16 tokens, so without this stand-in the test would
    never see a group with a pass, the case NuRL must leave alone.
    """
    real = correctness_reward(prompts, completions, answer=answer)
    return [1.0 if a == SOLVED else r for a, r in zip(answer, real)]


def text_length_reward(prompts=None, completions=None, **kw):
    """Varies between completions, so the group advantages are not all zero."""
    return [len(completion_text(c)) / 100 for c in completions]


def _problems(real_data):
    a, c = real_data("gsm8k", "train", limit=2)
    b = Problem("solved", "Name any number.", SOLVED)
    return a, b, c


class Spy(nt.NudgedGRPOTrainer):
    """Keeps each generation batch exactly as TRL will train on it (before its shuffle)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        n = len(inputs)
        self.seen.append({"out": out, "rec": self.last_nudge,
                          "logged": list(self._logs["completion"])[-n:]})
        return out


def _trainer(tmp_path, offline_model_dir, problems, hints, nudging, steps):
    from peft import LoraConfig

    from nudgelib.policies.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(offline_model_dir)
    ds = nt.trl_dataset(problems, instruction=INSTRUCTION, hints=hints)
    args = nt.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=len(problems) * G,
        num_generations=G, max_completion_length=16, max_steps=steps, logging_steps=1,
        report_to="none", use_cpu=True, bf16=False, learning_rate=1e-4, save_strategy="no",
        seed=0, disable_tqdm=True)
    tr = Spy(model=model, processing_class=tok, reward_funcs=[verified_or_solved, text_length_reward],
             args=args, train_dataset=ds, nudging=nudging,
             peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                    task_type="CAUSAL_LM"))
    tr.seen = []
    return tr, tok


HINTS = {"a": "First find how many were sold in May.", "b": "Any number will do.",
         "c": "Work in minutes."}


def _train(tmp_path, offline_model_dir, real_data, nudging, steps, hinted):
    """Train on problems a (GSM8K), b (counted as solved), c (GSM8K); hints for ``hinted``."""
    named = dict(zip("abc", _problems(real_data)))
    hints = {named[k].id: HINTS[k] for k in hinted}
    tr, tok = _trainer(tmp_path, offline_model_dir, list(named.values()), hints, nudging, steps)
    tr.train()
    return tr, tok, tuple(named.values()), hints


def _unpadded(ids, mask):
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def _hand_advantages(rewards):
    r = torch.tensor(rewards).view(-1, G)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)  # TRL: unbiased std
    return adv.flatten()


def test_nurl_regenerates_g_minus_1_hinted_completions_of_a_zero_pass_group_and_nothing_else(
        tmp_path, offline_model_dir, real_data):
    tr, tok, (a, b, c), hints = _train(tmp_path, offline_model_dir, real_data, "nurl", 2, "ab")
    assert len(tr.seen) == 2  # one generation batch per step
    nudged_total = untouched_total = 0
    for step, seen in enumerate(tr.seen, 1):
        out, rec = seen["out"], seen["rec"]
        before = list(zip(rec.prompt_ids_before, rec.completion_ids_before))
        # the batch TRL trains on is the spliced one
        trained = list(zip(_unpadded(out["prompt_ids"], out["prompt_mask"]),
                           _unpadded(out["completion_ids"], out["completion_mask"])))
        assert trained == list(zip(rec.prompt_ids_after, rec.completion_ids_after))
        # ... and TRL scored the spliced completions, not the first samples
        texts = tok.batch_decode([c for _, c in trained], skip_special_tokens=True)
        assert [completion_text(x) for x in seen["logged"]] == texts
        answers, expected_nudged = [], []
        for g in range(3):
            rows = range(g * G, (g + 1) * G)
            pid = rec.problem_ids[g * G]
            assert all(rec.problem_ids[i] == pid for i in rows)  # TRL's groups are contiguous
            prob = {p.id: p for p in (a, b, c)}[pid]
            answers += [prob.answer] * G
            passes = [rec.passed[i] for i in rows]
            if prob is b:
                assert all(passes)
            if not any(passes) and pid in hints:
                expected_nudged.append(g)
                nudged_total += 1
                keep = rows[0]  # the first (failed) completion stays, under the plain prompt
                assert trained[keep] == before[keep]
                hinted = f"{prob.question}\n\nHint: {hints[pid]}\n{INSTRUCTION}"
                for i in rows[1:]:
                    assert hinted in tok.decode(trained[i][0])  # conditioned on the hinted prompt
                    assert "Hint:" not in tok.decode(before[i][0])
                    assert trained[i][1] != before[i][1]  # a new completion
                assert "Hint:" not in tok.decode(trained[keep][0])
            else:
                untouched_total += 1
                for i in rows:
                    assert trained[i] == before[i]
                    assert "Hint:" not in tok.decode(trained[i][0])
        assert rec.nudged_groups == expected_nudged
        assert rec.regenerated == [i for g in expected_nudged for i in range(g * G + 1, g * G + G)]
        # advantages by hand from the rewards of the final completions
        rewards = [x + y for x, y in zip(verified_or_solved(None, texts, answer=answers),
                                         text_length_reward(None, texts))]
        torch.testing.assert_close(out["advantages"], _hand_advantages(rewards),
                                   rtol=1e-4, atol=1e-5)
        log = tr.state.log_history[step - 1]
        assert log["step"] == step
        assert log["frac_nudged"] == pytest.approx(len(expected_nudged) / 3)
        assert log["pass_rate"] == pytest.approx(sum(rec.passed) / len(rec.passed))
        assert log["missing_hints"] == sum(1 for g in range(3) if not any(
            rec.passed[g * G:(g + 1) * G]) and rec.problem_ids[g * G] not in hints)
        lengths = [len(cc) for _, cc in trained]
        assert log["completions/mean_length"] == pytest.approx(sum(lengths) / len(lengths))
        if expected_nudged:
            assert log["hinted_pass_rate"] == pytest.approx(
                sum(rec.hinted_passed) / len(rec.hinted_passed))
    assert nudged_total >= 1 and untouched_total >= 2  # both branches really ran
    assert tr.nudge_totals["nudged_groups"] == nudged_total
    assert tr.nudge_totals["hinted_completions"] == nudged_total * (G - 1)


def test_always_samples_every_hinted_prompt_with_its_hint(tmp_path, offline_model_dir, real_data):
    tr, tok, _, hints = _train(tmp_path, offline_model_dir, real_data, "always", 1, "ab")
    (seen,) = tr.seen
    out, rec = seen["out"], seen["rec"]
    prompts = [tok.decode(p) for p in _unpadded(out["prompt_ids"], out["prompt_mask"])]
    for i, pid in enumerate(rec.problem_ids):
        assert ("Hint: " + hints[pid] in prompts[i]) if pid in hints else "Hint:" not in prompts[i]
    assert rec.regenerated == [i for i, pid in enumerate(rec.problem_ids) if pid in hints]
    assert tr.state.log_history[0]["frac_nudged"] == pytest.approx(2 / 3)


def test_none_is_plain_trl_grpo_with_the_pass_metrics(tmp_path, offline_model_dir, real_data):
    tr, tok, _, _ = _train(tmp_path, offline_model_dir, real_data, "none", 1, "ac")
    (seen,) = tr.seen
    rec = seen["rec"]
    assert rec.regenerated == [] and rec.nudged_groups == []
    assert rec.prompt_ids_after == rec.prompt_ids_before
    assert rec.completion_ids_after == rec.completion_ids_before
    assert not any("Hint:" in tok.decode(p) for p in rec.prompt_ids_after)
    log = tr.state.log_history[0]
    assert log["frac_nudged"] == 0 and "missing_hints" not in log
    assert log["frac_zero_pass"] == pytest.approx(
        sum(not any(rec.passed[g * G:(g + 1) * G]) for g in range(3)) / 3)
    assert log["pass_rate"] >= 1 / 3  # the 'solved' group passes


# ----------------------------------------------------------------------------- accelerate

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_accelerate_launch_gloo(tmp_path, offline_model_dir):
    """2 CPU processes, gloo, 2 steps of NuRL with reference hints, through the README script.

    3 prompts x G=4 = 12 completions a step, 6 per process: the second group is split between
    the processes, so the 0/G decision and the regeneration must agree across them. The
    problems are the hard arithmetic tier (mostly 0/G for the base model; each has a teacher
    decomposition hint).
    """
    out = tmp_path / "run"
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "nudgelib.integrations.trl_train", "--config", "cpu-fast", "--steps", "2",
           "--out", str(out), "--nudging", "nurl", "--set", "prompts_per_step=3",
           "--set", f"group_size={G}", "--set", "max_new_tokens=16",
           "--set", 'difficulty_counts={"chain": 6}', "--set", "stop_at_newline=false",
           "--nudge-log"]
    # no GPU for --multi_gpu to find: accelerate runs MULTI_CPU over gloo (plain `--cpu` starts
    # several processes only through mpirun)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run = json.loads((out / "run.json").read_text())
    assert (run["num_processes"], run["backend"]) == (2, "gloo")
    assert run["distributed_type"].endswith("MULTI_CPU")
    assert run["grpo"]["per_device_train_batch_size"] == 6
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2]  # written once, by the main process
    for x in steps:
        for key in ("frac_nudged", "pass_rate", "frac_zero_pass", "reward", "missing_hints"):
            assert key in x, key
    recs = {r: [json.loads(x) for x in (out / f"nudge-rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    assert len(recs[0]) == len(recs[1]) == 2
    nudged = 0
    for r0, r1 in zip(recs[0], recs[1]):
        assert (r0["row_offset"], r1["row_offset"]) == (0, 6)
        assert r0["passed"] == r1["passed"] and r0["nudged_groups"] == r1["nudged_groups"]
        zero = [g for g in range(3) if not any(r0["passed"][g * G:(g + 1) * G])]
        assert set(r0["nudged_groups"]) <= set(zero)
        regenerated = [i + 0 for i in r0["regenerated"]] + [i + 6 for i in r1["regenerated"]]
        assert sorted(regenerated) == [g * G + m for g in r0["nudged_groups"] for m in range(1, G)]
        nudged += len(r0["nudged_groups"])
    assert nudged >= 1
    assert sum(x["frac_nudged"] for x in steps) * 3 == pytest.approx(nudged)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    assert summary["step"] == 2
    # the checkpoint's manifest, written once both processes had saved their files
    from nudgelib.training.runs import verify_folder

    assert verify_folder(out / "checkpoint-2") is None
    assert (out / "checkpoint-2" / "rng_state_1.pth").is_file()


def test_the_trl_script_resumes_from_the_newest_checkpoint_that_verifies(tmp_path, capsys,
                                                                         offline_model_dir):
    """A flipped byte in the newest TRL checkpoint is named and skipped; the run resumes from
    the one before. A damaged hint bank is named with rc 2, never a traceback."""
    from nudgelib.integrations import trl_train

    out = tmp_path / "run"
    argv = ["--config", "cpu-fast", "--out", str(out), "--save-every", "1",
            "--set", "prompts_per_step=2", "--set", "group_size=2", "--set", "max_new_tokens=8",
            "--set", "stop_at_newline=false"]
    assert trl_train.main([*argv, "--steps", "2"]) == 0
    weights = out / "checkpoint-2" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert trl_train.main([*argv, "--steps", "3", "--resume"]) == 0
    said = capsys.readouterr().out
    assert "checkpoint checkpoint-2 is damaged" in said and "adapter_model.safetensors" in said, said
    assert "resuming from checkpoint-1 instead" in said, said
    assert f"resuming from {out / 'checkpoint-1'}" in said, said
    assert json.loads(said.strip().splitlines()[-1])["step"] == 3
    # step 2 is trained again: its earlier row is set aside with the old file, not duplicated
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    (aside,) = out.glob("metrics.jsonl.before-resume-*")
    before = [json.loads(x) for x in aside.read_text().splitlines()]
    assert aside.name in said and [r["step"] for r in before if "loss" in r] == [1, 2]
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "state.json").write_bytes(b"\x00\xff" * 8)
    other = [a if a != str(out) else str(tmp_path / "other") for a in argv]
    rc = trl_train.main([*other, "--steps", "1", "--nudging", "nurl", "--hint-bank", str(bank)])
    err = capsys.readouterr().err
    assert rc == 2 and f"hint bank {bank}" in err and "Traceback" not in err, err


def test_the_trl_script_refuses_a_folder_in_use_or_not_a_run(tmp_path, capsys):
    """Issue 22: the TRL script claims and locks its run folder like nudgelib.training.trainer, before
    the model is loaded."""
    from nudgelib.integrations import trl_train
    from nudgelib.training.build import build_problems
    from nudgelib.training.config import get_train_config
    from nudgelib.training.runs import LOCK, claim_run_folder

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    argv = ["--config", "cpu-fast", "--steps", "1", "--out"]
    assert trl_train.main([*argv, str(user)]) == 2
    assert "is not a nudgelib run folder" in capsys.readouterr().err
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    run = tmp_path / "run"
    cfg = get_train_config("cpu-fast")
    claim_run_folder(run, cfg.to_dict(), build_problems(cfg))  # another run's folder...
    holder = subprocess.Popen(["sleep", "30"])  # ...whose live process holds the lock
    try:
        (run / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                            "since": "earlier"}))
        assert trl_train.main([*argv, str(run)]) == 2
        assert f"in use by pid {holder.pid} on {socket.gethostname()}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- KL: TRL vs nudgelib

def _lora_params(model):
    return [p for n, p in model.named_parameters() if p.requires_grad]


def test_trl_kl_gradient_matches_nudgelib_with_the_setting_grpo_config_chooses(tmp_path, offline_model_dir):
    """The loss TRL computes for a batch, KL included, has the gradient of nudgelib's policy_loss.

    The batch is built by hand: ratios away from 1 (old log-probs shifted, some clipped), a
    reference that differs per token, padding. With zero advantages the loss is beta x KL alone,
    so the first comparison is the KL gradient by itself; the second is the whole loss. TRL's
    ratio-weighted KL (``use_bias_correction_kl=True``, its default since 1.16) must differ, or the
    test could not tell the settings apart.
    """
    from peft import LoraConfig

    from nudgelib.core.losses import policy_loss
    from nudgelib.policies.models import load_model_and_tokenizer
    from nudgelib.training.config import get_train_config

    cfg = get_train_config("cpu-fast", stop_at_newline=False, kl_beta=0.04, group_size=G, prompts_per_step=1,
                           aggregation="seq_mean_token_mean", micro_batch_size=G)
    args = nt.grpo_config(cfg, tmp_path, max_steps=1, save_strategy="no", disable_tqdm=True)
    assert args.use_bias_correction_kl is False and args.loss_type == "grpo"
    model, tok = load_model_and_tokenizer(offline_model_dir)
    ds = nt.trl_dataset([Problem("p", "What is 2 + 3?", "5")], instruction=INSTRUCTION)
    tr = nt.NudgedGRPOTrainer(model=model, processing_class=tok, reward_funcs=[correctness_reward], args=args,
                              train_dataset=ds, nudging="none",
                              peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     task_type="CAUSAL_LM", init_lora_weights=False))
    tr.current_gradient_accumulation_steps = 1
    model = tr.model
    model.train()
    g = torch.Generator().manual_seed(0)
    prompt = tok("What is 2 + 3?", return_tensors="pt")["input_ids"].repeat(G, 1)
    T = 6
    completion = torch.randint(100, 5000, (G, T), generator=g)
    cmask = torch.ones(G, T, dtype=torch.long)
    cmask[1, 4:] = 0  # padding: a shorter completion
    cmask[3, 2:] = 0
    ids = torch.cat([prompt, completion], 1)
    att = torch.cat([torch.ones_like(prompt), cmask], 1)
    with torch.no_grad():
        now, _, _ = tr._get_per_token_logps_and_entropies(model, ids, att, T)
    old = now + 0.3 * torch.randn(G, T, generator=g)  # ratios from about 0.5 to 2: the clip is hit
    ref = now + 0.5 * torch.randn(G, T, generator=g)
    params = _lora_params(model)

    def grads_trl(adv, bias_correction):
        tr.args.use_bias_correction_kl = bias_correction
        inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
                  "completion_mask": cmask, "advantages": adv, "old_per_token_logps": old,
                  "ref_per_token_logps": ref}
        loss = tr._compute_loss(model, inputs)
        return loss, torch.autograd.grad(loss, params)

    def grads_nudgelib(adv):
        logp, _, _ = tr._get_per_token_logps_and_entropies(model, ids, att, T)
        loss, stats = policy_loss(logp, old, adv, cmask.float(), surrogate="ppo_clip",
                                  aggregation="seq_mean_token_mean", eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                                  ref_logp=ref, kl="k3", beta=cfg.kl_beta)
        return loss, torch.autograd.grad(loss, params), stats

    for adv in (torch.zeros(G), torch.tensor([1.5, -0.5, -1.0, 0.7])):
        l_trl, g_trl = grads_trl(adv, False)
        l_nl, g_nl, stats = grads_nudgelib(adv)
        assert abs(float(l_trl.detach()) - float(l_nl.detach())) < 1e-6
        for a, b in zip(g_trl, g_nl):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        assert max(float(x.abs().max()) for x in g_nl) > 1e-4  # a gradient, not zeros
        if adv.any():
            assert stats["clip_frac_low"] + stats["clip_frac_high"] > 0  # the clip took part
        _, g_biased = grads_trl(adv, True)
        gap = max(float((a - b).abs().max()) for a, b in zip(g_biased, g_nl))
        scale = max(float(b.abs().max()) for b in g_nl)
        assert gap > 1e-3 * scale, "TRL's ratio-weighted KL should change the gradient"
