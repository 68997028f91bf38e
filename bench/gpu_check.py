"""The GPU check: both GPU presets, measured in one call, through nudgelib's trainer and TRL.

    python bench/gpu_check.py [--out bench/results] [--steps 2] [--budget 330]   # on a CUDA GPU
    python bench/gpu_check.py --dry-run --out DIR                                 # on CPU, seconds

For each GPU preset (``colab-t4``: Qwen2.5-0.5B-Instruct in 4 bits; ``large-gpu``:
Qwen2.5-1.5B-Instruct in bfloat16) it

1. builds the preset's model **from its architecture with random weights** (the GPU machines
   here reach no model hub: the sizes below are the models' published configs, the tokenizer is
   the offline SmolLM2 one, so ids past its 49,152 tokens decode to nothing), saves it as a
   local checkpoint and loads it back through nudgelib's own loading path (4-bit NF4 with
   bitsandbytes where the preset asks for it);
2. runs ``--steps`` real training steps of GRPO and of NuRL through
   :class:`nudgelib.training.trainer.Trainer`, with the preset's group size, prompts per step and
   token budget. Random weights solve nothing, so every group is 0/G and NuRL nudges every
   group (G-1 hinted rows each, reference hints): the most sampling a NuRL step can cost;
3. runs the same number of NuRL steps through TRL's GRPOTrainer
   (:class:`nudgelib.integrations.trl.NudgedGRPOTrainer`).

It prints progress and writes ``gpu_check-<device>.json`` and a readable ``.txt``: the device,
library versions, per preset and path the step time split into sampling and update, rollout
tokens/s, peak GPU memory (``torch.cuda.max_memory_allocated``), whether the 4-bit base loaded,
and every fallback taken (the CPU decode loop declining on a GPU, the sampler, a missing
library, a phase skipped for time). Plain device allocations: the check never sets a managed
or unified-memory allocator (``PYTORCH_CUDA_ALLOC_CONF`` is recorded as found). A time budget
(``--budget`` seconds, default 330: the whole check inside 6 minutes) skips what is left once
spent, and says so.

``--dry-run`` runs the same code on CPU with tiny random configs (2 layers, width 64), 1 step,
4-bit off (recorded as a fallback), in seconds; CI runs it and checks the JSON's fields.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from nudgelib.hints.generate import reference_hints
from nudgelib.presets import OFFLINE_SMOLLM2, PRESETS
from nudgelib.tasks.arithmetic import INSTRUCTION as ARITHMETIC_INSTRUCTION
from nudgelib.tasks.problems import load_problems
from nudgelib.training.build import build_problems
from nudgelib.training.config import TrainConfig, get_train_config
from nudgelib.training.trainer import Trainer

GPU_PRESETS = ("colab-t4", "large-gpu")
QWEN25 = {  # the published configs of the two models (architecture only; weights are random)
    "Qwen/Qwen2.5-0.5B-Instruct": dict(hidden_size=896, intermediate_size=4864,
                                       num_hidden_layers=24, num_attention_heads=14),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(hidden_size=1536, intermediate_size=8960,
                                       num_hidden_layers=28, num_attention_heads=12),
}
COMMON = dict(num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
              rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768,
              hidden_act="silu")
DRY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
DRY_SIZES = dict(group_size=4, prompts_per_step=2, max_new_tokens=8)
VERSIONS = ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate")


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def versions() -> dict:
    out = {}
    for dist in VERSIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def device_info(cuda: bool) -> dict:
    info = {"cuda": cuda, "python": platform.python_version(), "cpu": platform.processor(),
            "cpu_cores": os.cpu_count(), "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(name=p.name, memory_gb=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported(),
                    cuda_version=torch.version.cuda)
    else:
        info.update(name="cpu")
    return info


def random_checkpoint(model_id: str, dry: bool, dtype: str, folder: Path) -> dict:
    """Save a Qwen2 model of ``model_id``'s architecture (random weights) and the offline
    tokenizer into ``folder``; returns what was built."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from nudgelib.policies.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(OFFLINE_SMOLLM2))
    sizes = {**COMMON, **(DRY if dry else QWEN25[model_id])}
    if dry:  # the tokenizer's own vocabulary: a tiny model whose logits stay small on CPU
        sizes["vocab_size"] = len(tok)
    cfg = AutoConfig.for_model("qwen2", **sizes, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=getattr(torch, dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return {"architecture": "qwen2", "of": model_id, **sizes, "weights": "random (seed 0)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": f"offline SmolLM2 ({len(tok)} tokens)"}


def task_fields(dry: bool) -> dict:
    """GSM8K as the preset says when the data is here; else (and in the dry run, for short
    prompts) short-answer arithmetic, generated, with the preset's sampling sizes either way."""
    try:
        if not dry:
            load_problems("gsm8k", "train", limit=1)
            return {}
    except Exception:  # noqa: BLE001 (no data folder and no hub: use generated problems)
        pass
    # the chain tier: the arithmetic problems with worked solutions, so every one has a hint
    return {"task": "arithmetic", "difficulty_counts": {"chain": 16},
                "format_weight": 0.0, "instruction": ARITHMETIC_INSTRUCTION}


def train_config(preset: str, model_dir: Path, dry: bool, steps: int, fallbacks: list) -> TrainConfig:
    # every row goes through the update (random weights solve nothing, so every advantage is
    # 0 and the default would skip the backward: the update would not be measured)
    over = {"model_id": str(model_dir), "hint_source": "reference", "hint_type": "partial_steps",
            "skip_zero_advantage": False, **task_fields(dry)}
    if "task" in over and not dry:
        fallbacks.append("no GSM8K data here: generated arithmetic problems at the preset's "
                         "sampling sizes")
    if dry:
        over.update(DRY_SIZES, device="cpu", dtype="float32", load_in_4bit=False,
                    gradient_checkpointing=False, micro_batch_size=8)
        if PRESETS[preset].load_in_4bit:
            fallbacks.append("dry run on CPU: the 4-bit base is not loaded (bitsandbytes NF4 "
                             "needs CUDA)")
    cfg = get_train_config(preset, **over)
    n = cfg.prompts_per_step * steps
    return cfg.with_overrides(n_train_problems=n) if cfg.task != "arithmetic" else cfg


def cuda_reset(cuda: bool) -> None:
    gc.collect()  # the previous phase's model and optimizer
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(cuda: bool) -> float | None:
    if not cuda:
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def is_4bit(model) -> bool:
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())


def nudgelib_phase(cfg: TrainConfig, nudging: str, steps: int, cuda: bool) -> dict:
    """``steps`` steps of the trainer; per step the sampling and update seconds and tokens/s."""
    cuda_reset(cuda)
    t0 = time.time()
    trainer = Trainer(cfg.with_overrides(nudging=nudging), None, progress=False)
    load_s = time.time() - t0
    rows = []
    for _ in range(steps):
        r = trainer.train_step()
        sampled = cfg.prompts_per_step * cfg.group_size
        rows.append({"step": r["step"], "sample_s": round(r["t_sample"], 3),
                     "resample_s": round(r["t_resample"], 3), "update_s": round(r["t_train"], 3),
                     "tokens_per_s": round(r["len_mean"] * sampled / r["t_sample"], 1)
                     if r["t_sample"] > 0 else None,
                     "rows_resampled": r["rows_resampled"], "frac_nudged": r["frac_nudged"],
                     "len_mean": round(r["len_mean"], 1), "loss": r["loss"]})
    policy = trainer.policy
    return {"engine": "nudgelib", "nudging": nudging, "load_s": round(load_s, 2), "steps": rows,
            "peak_gpu_gb": peak_gb(cuda), "base_in_4bit": is_4bit(policy.model),
            "sampling": policy.sampling_info(),
            "gradient_checkpointing": cfg.gradient_checkpointing}


def trl_phase(cfg: TrainConfig, steps: int, cuda: bool, work: Path) -> dict:
    """``steps`` NuRL steps of TRL's GRPOTrainer on the same checkpoint and settings."""
    from transformers import TrainerCallback

    from nudgelib.integrations.trl import (
        NudgedGRPOTrainer,
        device_and_dtype,
        grpo_config,
        lora_config,
        reward_functions,
        trl_dataset,
    )
    from nudgelib.policies.hf import nf4_config
    from nudgelib.policies.models import load_model_and_tokenizer

    cuda_reset(cuda)
    cfg = cfg.with_overrides(nudging="nurl")
    problems = build_problems(cfg)
    bank = reference_hints(problems, cfg.hint_type)
    use_cuda, dtype = device_and_dtype(cfg)
    extra = {"quantization_config": nf4_config(dtype)} if cfg.load_in_4bit else {}
    t0 = time.time()
    model, tok = load_model_and_tokenizer(cfg.model_id, dtype=dtype,
                                          device="cuda" if use_cuda else "cpu", **extra)
    funcs, weights = reward_functions(cfg, tok)
    targs = grpo_config(cfg, work / "trl", max_steps=steps, reward_weights=weights,
                        save_strategy="no", disable_tqdm=True)
    times: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if use_cuda:
                torch.cuda.synchronize()
            self.t = time.time()

        def on_step_end(self, a, state, control, **kw):
            if use_cuda:
                torch.cuda.synchronize()
            times.append({"step": state.global_step, "step_s": round(time.time() - self.t, 3)})

    trainer = NudgedGRPOTrainer(model=model, processing_class=tok, reward_funcs=funcs,
                                args=targs, train_dataset=trl_dataset(
                                    problems, instruction=cfg.instruction, hints=bank,
                                    hint_type=cfg.hint_type),
                                peft_config=lora_config(cfg), nudging="nurl",
                                hint_type=cfg.hint_type, callbacks=[Clock()])
    load_s = time.time() - t0
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for row, log in zip(times, logs):
        row["len_mean"] = log.get("completions/mean_length")
    return {"engine": "trl", "nudging": "nurl", "load_s": round(load_s, 2), "steps": times,
            "peak_gpu_gb": peak_gb(cuda), "base_in_4bit": is_4bit(trainer.model),
            "nudge_totals": dict(trainer.nudge_totals)}


def check_preset(preset: str, args, cuda: bool, deadline: float) -> dict:
    p = PRESETS[preset]
    fallbacks: list[str] = []
    out = {"preset": preset, "model": p.model_id, "phases": [], "skipped": [], "errors": [],
           "fallbacks": fallbacks}
    with tempfile.TemporaryDirectory(prefix=f"gpu_check-{preset}-") as tmp:
        work = Path(tmp)
        dtype = "float32" if args.dry_run else p.dtype
        if cuda and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            dtype = "float16"
            fallbacks.append("bfloat16 unsupported on this GPU: float16")
        t0 = time.time()
        out["model_built"] = random_checkpoint(p.model_id, args.dry_run, dtype, work / "model")
        out["build_s"] = round(time.time() - t0, 2)
        cfg = train_config(preset, work / "model", args.dry_run, args.steps, fallbacks)
        cfg = cfg.with_overrides(dtype=dtype) if not args.dry_run else cfg
        out["settings"] = {k: getattr(cfg, k) for k in (
            "task", "group_size", "prompts_per_step", "max_new_tokens", "lora_rank",
            "load_in_4bit", "dtype", "gradient_checkpointing", "micro_batch_size",
            "sampler", "fast_decode", "pack_weights", "skip_zero_advantage")}
        phases = [("nudgelib grpo", lambda: nudgelib_phase(cfg, "none", args.steps, cuda)),
                  ("nudgelib nurl", lambda: nudgelib_phase(cfg, "nurl", args.steps, cuda)),
                  ("trl nurl", lambda: trl_phase(cfg, args.steps, cuda, work))]
        for name, run in phases:
            if time.time() > deadline:
                out["skipped"].append(f"{name}: the time budget ({args.budget} s) was spent")
                say(f"{preset}: {name} skipped (time budget spent)")
                continue
            say(f"{preset}: {name} ...")
            t = time.time()
            try:
                res = run()
            except Exception as err:  # noqa: BLE001 (record it; the other phases still run)
                out["errors"].append({"phase": name, "error": f"{type(err).__name__}: {err}",
                                      "trace": traceback.format_exc()[-2000:]})
                if "trl" in name and type(err).__name__ in ("ImportError", "RuntimeError") \
                        and "trl" in str(err).lower():
                    fallbacks.append(f"{name}: TRL unavailable ({err})")
                say(f"{preset}: {name} FAILED: {type(err).__name__}: {err}")
                continue
            res["phase"], res["wall_s"] = name, round(time.time() - t, 2)
            out["phases"].append(res)
            decode = res.get("sampling", {}).get("decode_loop")
            if decode == "transformers" and res["sampling"].get("fast_decode"):
                note = ("the lean CPU decode loop declined (it runs on CPU only): transformers' "
                        "forward samples")
                if note not in fallbacks:
                    fallbacks.append(note)
            if cfg.load_in_4bit and not res.get("base_in_4bit"):
                fallbacks.append(f"{name}: load_in_4bit asked but the base is not 4-bit")
            say(f"{preset}: {name} done in {res['wall_s']} s, peak GPU {res['peak_gpu_gb']} GB")
    return out


def summary_lines(report: dict) -> list[str]:
    d = report["device"]
    lines = [f"GPU check on {d['name']} ({d.get('memory_gb', '-')} GB), dry run: "
             f"{report['dry_run']}, {report['wall_s']} s in all",
             "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             "models: built from their architecture with RANDOM weights (no model hub here)", ""]
    for p in report["presets"]:
        s = p["settings"]
        lines.append(f"== {p['preset']} ({p['model']}): G={s['group_size']} x "
                     f"{s['prompts_per_step']} prompts, {s['max_new_tokens']} new tokens, "
                     f"{s['dtype']}, 4-bit {s['load_in_4bit']}, task {s['task']}")
        for ph in p["phases"]:
            for st in ph["steps"]:
                if ph["engine"] == "nudgelib":
                    lines.append(f"  {ph['phase']:<14} step {st['step']}: sample {st['sample_s']} s"
                                 f" + resample {st['resample_s']} s, update {st['update_s']} s, "
                                 f"{st['tokens_per_s']} tok/s, nudged {st['frac_nudged']}")
                else:
                    lines.append(f"  {ph['phase']:<14} step {st['step']}: {st['step_s']} s "
                                 f"(sampling and update together)")
            lines.append(f"  {ph['phase']:<14} peak GPU memory {ph['peak_gpu_gb']} GB, base in "
                         f"4 bits: {ph['base_in_4bit']}")
        for f in p["fallbacks"]:
            lines.append(f"  fallback: {f}")
        for s_ in p["skipped"]:
            lines.append(f"  skipped: {s_}")
        for e in p["errors"]:
            lines.append(f"  ERROR in {e['phase']}: {e['error']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny random configs, 1 step")
    ap.add_argument("--out", default="bench/results", help="folder for the JSON and the .txt")
    ap.add_argument("--steps", type=int, help="steps per phase (default 2; 1 with --dry-run)")
    ap.add_argument("--presets", nargs="+", choices=GPU_PRESETS, default=list(GPU_PRESETS))
    ap.add_argument("--budget", type=float, default=330.0,
                    help="seconds; phases not started by then are skipped (and reported)")
    args = ap.parse_args(argv)
    args.steps = args.steps or (1 if args.dry_run else 2)
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("error: no CUDA device here; run with --dry-run to check the script on CPU",
              file=sys.stderr)
        return 2
    t0 = time.time()
    deadline = t0 + args.budget
    dev = device_info(cuda)
    say(f"device {dev['name']}; presets {args.presets}; {args.steps} step(s) per phase; "
        f"models from their configs with random weights (no hub)")
    report = {"check": "gpu_check", "dry_run": args.dry_run, "device": dev,
              "versions": versions(), "steps_per_phase": args.steps,
              "weights": "random: built from each model's published architecture (no hub)",
              "presets": [check_preset(p, args, cuda, deadline) for p in args.presets]}
    report["wall_s"] = round(time.time() - t0, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "dry-run" if args.dry_run else dev["name"].replace(" ", "-")
    (out / f"gpu_check-{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = summary_lines(report)
    (out / f"gpu_check-{name}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    say(f"wrote {out / f'gpu_check-{name}.json'} ({report['wall_s']} s)")
    return 1 if any(p["errors"] for p in report["presets"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
