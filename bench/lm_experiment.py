"""Wall time of the real-model experiment's ``--fast`` run and of one evaluation, before and
after issue 24's sampler and packed weights, alternating, in one run.

    python bench/lm_experiment.py [--rounds 1] [--json]

The speed-up is the fastest before over the fastest after (the least disturbed run of each),
with each round's own ratio beside it.

"before": ``NUDGE_FAST_DECODE=0 NUDGE_PACK_WEIGHTS=0`` (transformers' forward step by step,
LoRA folded for sampling, plain float32 products: the code paths before the issue); "after":
the defaults (:mod:`nudgelib.decode`). Each job runs in a fresh process:

* ``experiment``: ``python -m nudgelib.experiments.lm_nurl --fast --seed 3`` (four arms, 5
  steps, evaluations, the hint-lift table);
* ``full`` (not run by default: about 25 min): the full-size experiment for one seed,
  ``python -m nudgelib.experiments.lm_nurl --seed 10`` (30 steps, the committed run's sizes; the
  committed three-seed run is three of these plus one base-model evaluation);
* ``evaluation``: hint-free pass counts of the base model (SmolLM2-135M with the experiment's
  LoRA r=8, untrained) on 64 held-out arithmetic problems, n = 64 samples each, 12 new tokens,
  T = 1, 512 rows per call.

Results are compared too: the base model's metrics and pass counts (no training in between)
should be the same; trained arms may drift, as one token drawn differently in training (see
``nudgelib.decode``: improbable neighbours under float32 round-off) changes what follows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"before": {"NUDGE_FAST_DECODE": "0", "NUDGE_PACK_WEIGHTS": "0"},
         "after": {"NUDGE_FAST_DECODE": "1", "NUDGE_PACK_WEIGHTS": "1"}}
EVAL_COUNTS = {"sum": 22, "product": 21, "chain": 21}


def evaluation_worker(out: str) -> None:
    import torch

    from nudgelib.arithmetic import arithmetic_problems
    from nudgelib.config import build_policy, build_scorer
    from nudgelib.experiments.lm_nurl import LMNuRLConfig, train_config
    from nudgelib.rollouts import evaluate_pass_counts

    cfg = train_config(LMNuRLConfig(), seed=3)
    policy, scorer = build_policy(cfg), build_scorer(cfg)
    problems = arithmetic_problems(EVAL_COUNTS, split="heldout", seed=0)
    t = time.perf_counter()
    counts = evaluate_pass_counts(policy, problems, scorer, n_samples=64, temperature=1.0,
                                  max_new_tokens=cfg.max_new_tokens, prompts_per_call=8,
                                  generator=torch.Generator().manual_seed(11))
    Path(out).write_text(json.dumps({"seconds": time.perf_counter() - t,
                                     "counts": [int(c) for c in counts]}))


def run_job(job: str, mode: str, tmp: Path) -> dict:
    out = tmp / f"{job}-{mode}.json"
    env = {**os.environ, **MODES[mode]}
    if job == "experiment":
        cmd = [sys.executable, "-m", "nudgelib.experiments.lm_nurl", "--fast", "--seed", "3",
               "--out", str(out)]
    elif job == "full":
        cmd = [sys.executable, "-m", "nudgelib.experiments.lm_nurl", "--seed", "10",
               "--out", str(out)]
    else:
        cmd = [sys.executable, __file__, "--worker", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{job} ({mode}) failed:\n{proc.stderr[-3000:]}")
    return {"wall": wall, **json.loads(out.read_text())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--jobs", default="experiment,evaluation")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        evaluation_worker(args.worker)
        return 0
    jobs = args.jobs.split(",")
    res = {j: {m: [] for m in MODES} for j in jobs}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for job in jobs:
                for mode in MODES:
                    x = run_job(job, mode, Path(d))
                    res[job][mode].append(x)
                    print(f"round {r + 1} {job:10s} {mode:6s} {x['wall']:7.1f} s", flush=True)
    summary = {}
    print("\n| job | before s | after s | speed-up |\n|---|---|---|---|")
    for job in jobs:
        b = min(x["wall"] for x in res[job]["before"])
        a = min(x["wall"] for x in res[job]["after"])
        per_round = [round(x["wall"] / y["wall"], 2)
                     for x, y in zip(res[job]["before"], res[job]["after"])]
        summary[job] = {"before_s": round(b, 1), "after_s": round(a, 1),
                        "speedup": round(b / a, 2), "speedup_per_round": per_round}
        print(f"| {job} | {b:.1f} | {a:.1f} | {b / a:.2f}x (rounds: {per_round}) |")
    for job in ("experiment", "full"):
        if job not in jobs:
            continue
        before, after = res[job]["before"][0], res[job]["after"][0]
        print(f"\n{job}: held-out metrics, before -> after:")
        for arm in before["metrics"]:
            pairs = {k: (round(v, 3), round(after["metrics"][arm][k], 3))
                     for k, v in before["metrics"][arm].items()}
            print(f"  {arm}: {pairs}")
        summary[job]["base_metrics_equal"] = before["metrics"]["base"] == after["metrics"]["base"]
        summary[job]["metrics"] = {m: {a: {k: round(v, 3) for k, v in r["metrics"][a].items()}
                                       for a in r["metrics"]}
                                   for m, r in (("before", before), ("after", after))}
    if "evaluation" in jobs:
        cb = res["evaluation"]["before"][0]["counts"]
        ca = res["evaluation"]["after"][0]["counts"]
        same = sum(x == y for x, y in zip(cb, ca))
        summary["eval_counts_equal"] = f"{same}/{len(cb)} problems"
        summary["eval_correct"] = {"before": sum(cb), "after": sum(ca), "of": 64 * len(cb)}
        print(f"\nevaluation: pass counts equal on {same}/{len(cb)} problems; correct samples "
              f"{sum(cb)} before, {sum(ca)} after, of {64 * len(cb)}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
