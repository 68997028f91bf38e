"""Benchmark: verify 1,000 GSM8K-style completions with nudgelib vs math-verify in a loop.

    NUDGE_DATA_DIR=../shared/data python bench/verify_speed.py [--n 1000] [--json]

Completions are built from GSM8K test reference solutions (real text), in the shapes models
produce: the reference as is (``#### n``), a boxed answer, "The answer is n.", a wrong number,
and no final answer at all. Both sides get the same (gold, completion) pairs; the baseline is
``math_verify.verify(parse(gold), parse(completion))`` called in a loop, as a user would.
Prints both wall times, the ratio nudgelib / math-verify, and checks that the verdicts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nudgelib.tasks import problems  # noqa: E402
from nudgelib.tasks import verify as V  # noqa: E402


def make_completions(n: int, seed: int = 0) -> tuple[list[str], list[str], str]:
    rng = random.Random(seed)
    try:
        ps = problems.load_gsm8k("test")
        source = "gsm8k/test reference solutions"
    except problems.DataNotFound:
        ps = [problems.Problem(id=str(i), question="", answer=str(i * 7),
                               solution=f"{i} * 7 = {i * 7}\n#### {i * 7}") for i in range(n)]
        source = "synthetic (set NUDGE_DATA_DIR for real GSM8K text)"
    golds, comps = [], []
    for i in range(n):
        p = ps[i % len(ps)]
        body = p.solution.rsplit("####", 1)[0].strip()
        wrong = str(int(p.answer.replace(",", "")) + rng.choice([-3, -1, 1, 2, 10]))
        shape = i % 5
        comp = [p.solution, f"{body}\nSo the total is \\boxed{{{p.answer}}}.",
                f"{body}\nThe answer is {p.answer}.", f"{body}\n#### {wrong}",
                body][shape]
        golds.append(p.answer)
        comps.append(comp)
    return golds, comps, source


def run_math_verify(golds, comps):
    from math_verify import parse, verify

    return [bool(verify(parse("\\boxed{" + g + "}"), parse(c))) for g, c in zip(golds, comps)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args()
    golds, comps, source = make_completions(args.n)

    t0 = time.perf_counter()
    V.warmup()
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = V.verify_batch(golds, comps)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = run_math_verify(golds, comps)
    t_mv = time.perf_counter() - t0

    agree = sum(o.correct == t for o, t in zip(ours, theirs))
    shapes = ["reference '#### n'", "boxed", "'The answer is n.'", "wrong '#### n'",
              "no final answer"]
    differ = {s: 0 for s in shapes}
    for i, (o, t) in enumerate(zip(ours, theirs)):
        differ[shapes[i % 5]] += o.correct != t
    paths = {p: sum(o.path == p for o in ours) for p in ("fast", "math_verify", "string", "extract")}
    print(f"data: {source}; {args.n} completions; {os.cpu_count()} CPU cores")
    print(f"nudgelib.verify_batch : {t_ours:7.3f} s  (server start-up {startup:.2f} s, once)")
    print(f"math-verify loop      : {t_mv:7.3f} s")
    print(f"ratio nudgelib / math-verify: {t_ours / t_mv:.4f}")
    print(f"verdicts agree: {agree}/{args.n}; correct: {sum(o.correct for o in ours)}; "
          f"decided by: {paths}")
    print(f"verdicts differ, by completion shape: {differ}\n  (by design: nudgelib requires an "
          f"explicit final answer; math-verify's anchorless extraction takes any number in the "
          f"working, so it also accepts some completions whose stated final answer is wrong)")
    if args.json:
        print(json.dumps({"n": args.n, "nudgelib_s": round(t_ours, 4),
                          "math_verify_s": round(t_mv, 4), "ratio": round(t_ours / t_mv, 5),
                          "startup_s": round(startup, 3), "agree": agree, "paths": paths,
                          "differ_by_shape": differ}))


if __name__ == "__main__":
    main()
