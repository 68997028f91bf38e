"""How close the lean loop's log-probs are to the reference loop's, token by token, on
``bench/rollouts.py``'s settings (SmolLM2-135M, LoRA r=16 with non-zero B, 4 GSM8K prompts x
G = 8, 64 tokens, T = 1), over several generator seeds.

    python bench/decode_exactness.py [--seeds 4] [--json]

For the tokens both loops drew (each row up to its first differing token): the share within
1e-5 of the reference, the largest difference overall and among tokens of probability >= 0.01,
and for each row that diverged, the two loops' log-probs of the token where it did.
"""

from __future__ import annotations

import argparse
import json
import math

import torch


def main(argv=None) -> int:
    from rollouts import benchmark_policy  # bench/ is the script's folder: on sys.path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pol, texts = benchmark_policy(4)

    def sample(seed, lean):
        pol.fast_decode = pol.pack_weights = lean
        try:
            return pol.sample(texts, 8, temperature=1.0, max_new_tokens=64,
                              generator=torch.Generator().manual_seed(seed))
        finally:
            pol.fast_decode = pol.pack_weights = True

    diffs, logps, diverged = [], [], []
    for seed in range(args.seeds):
        ref, lean = sample(seed, False), sample(seed, True)
        a, b = ref.completion_ids, lean.completion_ids
        width = min(a.shape[1], b.shape[1])
        for r in range(a.shape[0]):
            m = (ref.completion_mask[r, :width] * lean.completion_mask[r, :width]).bool()
            differ = ((a[r, :width] != b[r, :width]) & m).nonzero()
            n = int(differ[0]) if len(differ) else int(m.sum())
            if len(differ):
                diverged.append((seed, r, n, float(ref.logp[r, n]), float(lean.logp[r, n])))
            diffs.append((ref.logp[r, :n] - lean.logp[r, :n]).abs())
            logps.append(ref.logp[r, :n])
    d, lp = torch.cat(diffs), torch.cat(logps)
    likely = lp >= math.log(0.01)
    out = {"tokens": int(d.numel()), "within_1e-5": round(float((d <= 1e-5).float().mean()), 5),
           "mean_abs": float(d.mean()), "max_abs": float(d.max()),
           "logp_at_max": float(lp[d.argmax()]),
           "max_abs_p_ge_0.01": float(d[likely].max()), "tokens_p_ge_0.01": int(likely.sum()),
           "within_1e-5_p_ge_0.01": round(float((d[likely] <= 1e-5).float().mean()), 5),
           "rows": args.seeds * 32, "diverged_rows": len(diverged),
           "diverged_at_logp": [[round(x, 2), round(y, 2)] for *_, x, y in diverged]}
    for k, v in out.items():
        print(f"{k}: {v}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
