"""Wall time of the real-model experiment's ``--fast`` run and of one evaluation, before and
after issue 24's sampler and packed weights, alternating, in one run.

    python bench/lm_experiment.py [--rounds 1] [--json]

The speed-up is the fastest before over the fastest after (the least disturbed run of each),
with each round's own ratio beside it.

"before": ``NUDGE_FAST_DECODE=0 NUDGE_PACK_WEIGHTS=0 NUDGE_SAMPLER=cdf`` (transformers' forward
step by step, LoRA folded for sampling, plain float32 products, inverse-CDF draws: the code
paths before the issue); "after": the defaults (:mod:`nudgelib.policies.decode`, packed weights, the
race sampler); ``--modes ...,reference``: the old loops with the race sampler
(``NUDGE_SAMPLER=race``), what "after" must reproduce: the two draw the same tokens from the
same numbers up to round-off, where "before" and "after" draw with different samplers.
Each job runs in a fresh process:

* ``experiment``: ``python -m nudgelib.experiments.lm_nurl --fast --seed 3`` (four arms, 5
  steps, evaluations, the hint-lift table);
* ``full`` (not run by default: about 25 min): the full-size experiment for one seed,
  ``python -m nudgelib.experiments.lm_nurl --seed 10`` (another seed: ``--full-seed``; 30
  steps, the committed run's sizes; the committed three-seed run is three of these plus one
  base-model evaluation);
* ``evaluation``: hint-free pass counts of the base model (SmolLM2-135M with the experiment's
  LoRA r=8, untrained) on 64 held-out arithmetic problems, n = 64 samples each, 12 new tokens,
  T = 1, 512 rows per call.

Results are compared too (reference -> after, before -> after, before -> unshared): with the
same sampler the base model's metrics and pass counts (no training in between) should be the
same; trained arms may drift, as one token drawn differently in training changes what follows.
With ``--rounds 2`` or more each mode's results are also compared with its own first round
(the same command in a fresh process).

``--modes before,after,unshared`` adds a third mode, timed but not part of the speed-up:
"before" with ``HFPolicy(share_prompts=False)`` (each row runs its own prompt: the same
arithmetic, only batched differently). How far it moves "before"'s metrics is how far the old
code's results move under a change of summation order alone: the yardstick for "same results".
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

MODES = {"before": {"NUDGE_FAST_DECODE": "0", "NUDGE_PACK_WEIGHTS": "0", "NUDGE_SAMPLER": "cdf"},
         "after": {"NUDGE_FAST_DECODE": "1", "NUDGE_PACK_WEIGHTS": "1", "NUDGE_SAMPLER": "race"},
         "reference": {"NUDGE_FAST_DECODE": "0", "NUDGE_PACK_WEIGHTS": "0",
                       "NUDGE_SAMPLER": "race"}}
# results are compared along these pairs (speed only along before -> after)
COMPARED = (("reference", "after"), ("before", "after"), ("before", "unshared"))
CONTROL = "unshared"  # "before" with share_prompts=False (--modes ...,unshared)


def unshared_worker(argv: list[str]) -> int:
    """``lm_nurl.main(argv)`` with every HFPolicy built with ``share_prompts=False``."""
    from nudgelib.experiments import lm_nurl
    from nudgelib.policies.hf import HFPolicy

    HFPolicy.__init__.__kwdefaults__["share_prompts"] = False
    return lm_nurl.main(argv)


EVAL_COUNTS = {"sum": 22, "product": 21, "chain": 21}


def evaluation_worker(out: str) -> None:
    import torch

    from nudgelib.experiments.lm_nurl import LMNuRLConfig, train_config
    from nudgelib.rollouts import evaluate_pass_counts
    from nudgelib.tasks.arithmetic import arithmetic_problems
    from nudgelib.training.build import build_policy, build_scorer

    cfg = train_config(LMNuRLConfig(), seed=3)
    policy, scorer = build_policy(cfg), build_scorer(cfg)
    problems = arithmetic_problems(EVAL_COUNTS, split="heldout", seed=0)
    t = time.perf_counter()
    counts = evaluate_pass_counts(policy, problems, scorer, n_samples=64, temperature=1.0,
                                  max_new_tokens=cfg.max_new_tokens, prompts_per_call=8,
                                  generator=torch.Generator().manual_seed(11))
    Path(out).write_text(json.dumps({"seconds": time.perf_counter() - t,
                                     "counts": [int(c) for c in counts]}))


def run_job(job: str, mode: str, tmp: Path, full_seed: int = 10) -> dict:
    out = tmp / f"{job}-{mode}.json"
    env = {**os.environ, **MODES["before" if mode == CONTROL else mode]}
    if job in ("experiment", "full"):
        argv = ["--fast", "--seed", "3"] if job == "experiment" else ["--seed", str(full_seed)]
        lead = ([__file__, "--unshared"] if mode == CONTROL
                else ["-m", "nudgelib.experiments.lm_nurl"])
        cmd = [sys.executable, *lead, *argv, "--out", str(out)]
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
    ap.add_argument("--modes", default="before,after",
                    help=f"of {', '.join(MODES)} and {CONTROL} ('before' with "
                         "share_prompts=False)")
    ap.add_argument("--full-seed", type=int, default=10, help="the full job's seed")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--unshared"]:  # the control's worker: the rest is lm_nurl's command line
        return unshared_worker(argv[1:])
    args = ap.parse_args(argv)
    if args.worker:
        evaluation_worker(args.worker)
        return 0
    jobs = args.jobs.split(",")
    modes = args.modes.split(",")
    if set(modes) - {*MODES, CONTROL}:
        raise SystemExit(f"--modes: each of {', '.join(MODES)}, {CONTROL}; got {args.modes}")
    res = {j: {m: [] for m in modes} for j in jobs}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for job in jobs:
                for mode in modes:
                    if mode == CONTROL and job == "evaluation":
                        continue  # the control is for trained results; evaluation has none
                    x = run_job(job, mode, Path(d), args.full_seed)
                    res[job][mode].append(x)
                    print(f"round {r + 1} {job:10s} {mode:8s} {x['wall']:7.1f} s", flush=True)
    summary = {job: {} for job in jobs}
    if {"before", "after"} <= set(modes):
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
        runs = {m: res[job][m][0] for m in modes}
        summary[job]["wall_s"] = {m: [round(x["wall"], 1) for x in res[job][m]] for m in modes}
        summary[job]["metrics"] = {m: {a: {k: round(v, 3) for k, v in r["metrics"][a].items()}
                                       for a in r["metrics"]}
                                   for m, r in runs.items()}
        for x, y in COMPARED:
            if x not in runs or y not in runs:
                continue
            mx, my = runs[x]["metrics"], runs[y]["metrics"]
            print(f"\n{job}: held-out metrics, {x} -> {y}:")
            for arm in mx:
                pairs = {k: (round(v, 3), round(my[arm][k], 3)) for k, v in mx[arm].items()}
                print(f"  {arm}: {pairs}")
            summary[job][f"base_metrics_equal_{x}_{y}"] = mx["base"] == my["base"]
            summary[job][f"arms_metrics_equal_{x}_{y}"] = {a: mx[a] == my[a] for a in mx}
        for m in modes:  # the same command twice in fresh processes: the same results?
            later = [x["metrics"] == runs[m]["metrics"] for x in res[job][m][1:]]
            if later:
                summary[job][f"{m}_rounds_equal_round_1"] = later
    for x, y in COMPARED[:2]:
        if "evaluation" not in jobs or not {x, y} <= set(modes):
            continue
        cb, ca = (res["evaluation"][m][0]["counts"] for m in (x, y))
        same = sum(i == j for i, j in zip(cb, ca))
        summary[f"eval_counts_equal_{x}_{y}"] = f"{same}/{len(cb)} problems"
        summary[f"eval_correct_{x}_{y}"] = {x: sum(cb), y: sum(ca), "of": 64 * len(cb)}
        print(f"\nevaluation, {x} -> {y}: pass counts equal on {same}/{len(cb)} problems; "
              f"correct samples {sum(cb)} and {sum(ca)} of {64 * len(cb)}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
