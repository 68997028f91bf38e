"""One full GRPO step of nudgelib vs TRL's GRPOTrainer, same settings, same machine, alternating.

    python bench/step_vs_trl.py [--pairs 3] [--json]

A step = sample G completions for each prompt, verify and reward them, log-probs, loss,
backward, optimizer step. Settings (both sides, checked equal before timing): SmolLM2-135M
(offline), LoRA r=16 (alpha 32) on all linear layers, 4 GSM8K prompts x G=8, 64 new tokens,
temperature 1.0, top-p 1, no top-k, fp32, CPU; nudgelib's reward mix (verifier + 0.1 x format +
DAPO overlong penalty) as TRL reward functions; token-mean loss aggregation (TRL: ``dapo``),
clip 0.2/0.28, no KL, AdamW lr 1e-4 betas (0.9, 0.99); one micro-batch of 32 rows; every row
goes through the backward on both sides (``skip_zero_advantage=False``; nudgelib's default
skips rows whose advantage is 0, which TRL does not do).

Each side lives in its own worker process (its own model copy) and waits for the parent's
"go" before each step, so the steps run one at a time, alternating nudgelib, TRL, nudgelib, TRL
... after one warm-up step each. Peak memory is the worker's resident-set high-water mark during
the step (VmHWM, reset through /proc/self/clear_refs before it). With ``--json`` the last line is
``{"step_time_ratio": nudgelib/TRL median, "peak_mem_ratio": nudgelib/TRL max, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIDES = ("nudgelib", "trl")


# ----------------------------------------------------------------------------- worker

def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _rss_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _config(args):
    from nudgelib.presets import OFFLINE_SMOLLM2, SHORT_ANSWER_INSTRUCTION
    from nudgelib.training.config import TrainConfig

    rows = args.prompts * args.group
    return TrainConfig(
        name="bench", policy="hf", task="gsm8k", model_id=OFFLINE_SMOLLM2, train_split="train",
        n_train_problems=args.prompts, problem_selection="shortest", group_size=args.group,
        prompts_per_step=args.prompts, max_new_tokens=args.tokens, temperature=1.0, top_p=1.0,
        lora_rank=args.rank, lora_alpha=2 * args.rank, dtype="float32", device="cpu",
        micro_batch_size=rows, lr=1e-4, format_weight=0.1, overlong_weight=1.0,
        instruction=SHORT_ANSWER_INSTRUCTION, skip_zero_advantage=args.skip_zero_advantage,
        seed=args.seed)


def _lora_summary(model) -> dict:
    layers = {n: m for n, m in model.named_modules()
              if isinstance(getattr(m, "r", None), dict) and hasattr(m, "lora_A")}
    return {"lora_modules": len(layers),
            "lora_targets": sorted({n.split(".")[-1] for n in layers}),
            "lora_rank": sorted({r for m in layers.values() for r in m.r.values()}),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _nudgelib_worker(args, cfg, send, recv):
    from nudgelib.training.trainer import Trainer

    trainer = Trainer(cfg, None, progress=False)
    policy = trainer.policy
    prompts = policy.encode_prompts([p.question for p in trainer.problems])
    send({"settings": {
        "prompt_ids": sorted(prompts), "group_size": cfg.group_size,
        "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
        "top_p": cfg.top_p, "top_k": 0, "loss_aggregation": cfg.aggregation,
        "clip": [cfg.eps_low, cfg.eps_high], "kl_beta": cfg.kl_beta,
        "rows_per_micro_batch": cfg.micro_batch_size,
        "rewards": ["correctness_reward", "format_reward", "overlong_penalty"],
        "reward_weights": [1.0, trainer.scorer.format_weight, trainer.scorer.overlong_weight],
        "dtype": str(policy.model.dtype), **_lora_summary(policy.model)}})
    while recv() == "go":
        _reset_peak()
        t = time.perf_counter()
        row = trainer.train_step()
        dt = time.perf_counter() - t
        send({"seconds": dt, "peak_mb": _rss_mb(), "mean_length": row["len_mean"],
              "sample_s": row["t_sample"], "train_s": row["t_train"],
              "rows_trained": row["rows_trained"]})


def _trl_worker(args, cfg, send, recv):
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from nudgelib.integrations.trl import (
        LOSS_TYPES,
        grpo_config,
        lora_config,
        reward_functions,
        trl_dataset,
    )
    from nudgelib.policies.models import load_model_and_tokenizer
    from nudgelib.training.build import build_problems

    problems = build_problems(cfg)
    model, tok = load_model_and_tokenizer(cfg.model_id, dtype="float32", device="cpu")
    funcs, weights = reward_functions(cfg, tok)
    targs = grpo_config(cfg, "/tmp/nudgelib-bench-trl", max_steps=1 + args.pairs,
                        reward_weights=weights, adam_beta2=0.99, save_strategy="no",
                        logging_steps=1, disable_tqdm=True, seed=cfg.seed)
    ds = trl_dataset(problems, instruction=cfg.instruction)

    class Gate(TrainerCallback):
        """Blocks before each step until the parent says go; reports the step after it."""

        def on_step_begin(self, a, state, control, **kw):
            if recv() != "go":
                raise SystemExit(0)
            _reset_peak()
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.dt = time.perf_counter() - self.t
            self.peak = _rss_mb()

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                send({"seconds": self.dt, "peak_mb": self.peak,
                      "mean_length": logs.get("completions/mean_length")})

    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=funcs, args=targs,
                          train_dataset=ds, peft_config=lora_config(cfg), callbacks=[Gate()])
    prompts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for r in ds]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompts]
    gen = trainer.generation_config
    agg = {v: k for k, v in LOSS_TYPES.items()}
    send({"settings": {
        "prompt_ids": sorted(prompts), "group_size": targs.num_generations,
        "max_new_tokens": targs.max_completion_length, "temperature": gen.temperature,
        "top_p": gen.top_p, "top_k": gen.top_k or 0, "loss_aggregation": agg[targs.loss_type],
        "clip": [targs.epsilon, targs.epsilon_high], "kl_beta": targs.beta,
        "rows_per_micro_batch": targs.per_device_train_batch_size,
        "rewards": list(trainer.reward_func_names), "reward_weights": list(targs.reward_weights),
        "dtype": str(trainer.model.dtype), **_lora_summary(trainer.model)}})
    trainer.train()
    recv()  # the parent's final "stop"


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not corrupt the protocol

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def recv():
        line = sys.stdin.readline()
        return line.strip() or "stop"

    cfg = _config(args)
    (_nudgelib_worker if args.worker == "nudgelib" else _trl_worker)(args, cfg, send, recv)


# ----------------------------------------------------------------------------- parent

def _start(side, argv):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, *argv]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            bufsize=1, stderr=subprocess.DEVNULL if "--quiet" in argv else None)


def _read(proc, side):
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the {side} worker exited (code {proc.wait()})")
    return json.loads(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="timed (nudgelib, TRL) pairs")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-zero-advantage", action="store_true",
                    help="let nudgelib skip rows with zero advantage (its default in training)")
    ap.add_argument("--json", action="store_true", help="last line: the ratios as JSON")
    ap.add_argument("--quiet", action="store_true", help="hide the workers' logs")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    passthrough = [f"--pairs={args.pairs}", f"--prompts={args.prompts}", f"--group={args.group}",
                   f"--tokens={args.tokens}", f"--rank={args.rank}", f"--seed={args.seed}",
                   f"--threads={args.threads}"] + (["--skip-zero-advantage"]
                                                  if args.skip_zero_advantage else []) \
        + (["--quiet"] if args.quiet else [])
    procs = {side: _start(side, passthrough) for side in SIDES}
    try:
        settings = {side: _read(procs[side], side)["settings"] for side in SIDES}
        a, b = settings["nudgelib"], settings["trl"]
        differ = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
        if differ:
            shown = {k: v if k != "prompt_ids" else "the prompts' token ids differ"
                     for k, v in differ.items()}
            raise SystemExit(f"settings differ between nudgelib and TRL: {shown}")
        print("settings (equal on both sides): " + json.dumps(
            {k: v for k, v in a.items() if k != "prompt_ids"}), flush=True)
        print(f"prompts: {len(a['prompt_ids'])}, "
              f"{[len(p) for p in a['prompt_ids']]} tokens", flush=True)
        results = {side: [] for side in SIDES}
        for i in range(1 + args.pairs):  # step 0: warm-up
            for side in SIDES:
                procs[side].stdin.write("go\n")
                procs[side].stdin.flush()
                r = _read(procs[side], side)
                r["pair"] = i
                results[side].append(r)
                split = (f"  (sampling {r['sample_s']:.1f} s, update {r['train_s']:.1f} s, "
                         f"{r['rows_trained']} rows)") if "sample_s" in r else ""
                print(f"{'warm-up' if i == 0 else f'pair {i}'} {side:9s} "
                      f"{r['seconds']:7.2f} s  peak {r['peak_mb']:7.0f} MB  "
                      f"mean completion {r['mean_length']:.1f}{split}", flush=True)
    finally:
        for p in procs.values():
            try:
                p.stdin.write("stop\n")
                p.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        for p in procs.values():
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
    timed = {side: results[side][1:] for side in SIDES}
    ratios = [x["seconds"] / y["seconds"] for x, y in zip(timed["nudgelib"], timed["trl"])]
    peak = {side: max(r["peak_mb"] for r in timed[side]) for side in SIDES}
    med = {side: statistics.median(r["seconds"] for r in timed[side]) for side in SIDES}
    print("\n| pair | nudgelib s | TRL s | ratio |\n|---|---|---|---|")
    for k, (x, y, r) in enumerate(zip(timed["nudgelib"], timed["trl"], ratios), 1):
        print(f"| {k} | {x['seconds']:.2f} | {y['seconds']:.2f} | {r:.3f} |")
    print(f"\nmedian step: nudgelib {med['nudgelib']:.2f} s, TRL {med['trl']:.2f} s; "
          f"median of paired ratios {statistics.median(ratios):.3f}")
    print(f"peak RSS during a step: nudgelib {peak['nudgelib']:.0f} MB, TRL {peak['trl']:.0f} MB "
          f"(ratio {peak['nudgelib'] / peak['trl']:.3f})")
    if args.json:
        print(json.dumps({
            "step_time_ratio": round(statistics.median(ratios), 4),
            "peak_mem_ratio": round(peak["nudgelib"] / peak["trl"], 4),
            "paired_ratios": [round(r, 4) for r in ratios],
            "median_step_s": {k: round(v, 3) for k, v in med.items()},
            "peak_mb": {k: round(v, 1) for k, v in peak.items()},
            "settings": {k: v for k, v in a.items() if k != "prompt_ids"},
            "pairs": args.pairs, "machine_cores": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
