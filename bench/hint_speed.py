"""Time per self-generated hint (two calls) on SmolLM2-135M-Instruct, alone on the machine.

    NUDGE_DATA_DIR=../shared/data python bench/hint_speed.py [--problems 16]

Prints seconds per hint for each batch size (default 16; same problems and budgets as
bench/hint_lift.py: 128 explanation tokens, 48 hint tokens).
"""

import argparse
import json
import time

import torch

from nudgelib.hints.generate import generate_hints
from nudgelib.policies.hf import HFPolicy
from nudgelib.tasks.problems import load_problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    args = ap.parse_args()
    policy = HFPolicy.from_pretrained(args.model, lora_rank=0)
    probs = sorted(load_problems("gsm8k", "train"), key=lambda p: (len(p.question), p.id))
    probs = probs[:args.problems]
    out = {}
    for bs in args.batch_sizes:
        t = time.perf_counter()
        bank = generate_hints(policy, probs, "abstract", batch_size=bs, max_explanation_tokens=128,
                              max_hint_tokens=48, generator=torch.Generator().manual_seed(0))
        out[f"batch_{bs}"] = {"seconds_per_hint": (time.perf_counter() - t) / len(probs),
                              "first_try_leak_rate": bank.stats["first_try_leak_rate"],
                              "kept": bank.stats["kept"]}
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
