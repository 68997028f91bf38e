"""Does load change rewards? Correct answers that need math-verify (symbolic equivalences the
fast path leaves to it), mixed with hostile outputs that spend their whole deadline, checked
by ``verify_batch`` with more threads than cores.

    python bench/verify_load.py [--rounds 3] [--workers 16] [--timeout 0.5]

Prints, per round, how many correct answers were judged correct or timed out, how many hostile
outputs timed out, and the slowest call. With wall-clock deadlines and one child per request,
correct answers became timeouts under this load (issue 22); with CPU-time deadlines measured
in the child and one child per CPU, none should.
"""

from __future__ import annotations

import argparse
import time

from nudgelib.tasks.verify import verify_batch, warmup

LEGIT = [("x^2+7x+10", "The answer is \\boxed{(x+2)(x+5)}"),
         ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}"),
         ("(x+1)^{10}", "\\boxed{x^{10}+10x^9+45x^8+120x^7+210x^6+252x^5+210x^4+120x^3+45x^2"
                        "+10x+1}"),
         ("\\sin^2 x+\\cos^2 x", "\\boxed{1}")]
HOSTILE = ["\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{(10^{100})!!}", "\\boxed{100000000!}",
           "\\boxed{" + "+".join(["2^{99999}"] * 200) + "}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=0.5)
    args = ap.parse_args(argv)
    warmup()
    golds, comps, legit = [], [], set()
    for i in range(16):  # interleaved: 16 hostile, 16 correct
        golds.append("5")
        comps.append(HOSTILE[i % len(HOSTILE)])
        g, c = LEGIT[i % len(LEGIT)]
        legit.add(len(golds))
        golds.append(g)
        comps.append(c)
    for r in range(args.rounds):
        t0 = time.perf_counter()
        res = verify_batch(golds, comps, timeout=args.timeout, workers=args.workers)
        wall = time.perf_counter() - t0
        ok = [res[i] for i in sorted(legit)]
        bad = [res[i] for i in range(len(res)) if i not in legit]
        print(f"round {r}: correct answers {sum(map(bool, ok))}/{len(ok)} judged correct, "
              f"{sum(o.reason == 'timeout' for o in ok)} timed out; hostile "
              f"{sum(o.reason == 'timeout' for o in bad)}/{len(bad)} timed out, "
              f"{sum(map(bool, bad))} judged correct; slowest call "
              f"{max(o.seconds for o in res):.2f} s; batch {wall:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
