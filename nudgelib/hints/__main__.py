"""``python -m nudgelib.hints``: write a hint bank for a dataset, offline, before RL."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from nudgelib.hints.bank import CONTEXT_TYPES, HINT_TYPES, ON_LEAK, HintBank, HintBankError
from nudgelib.hints.generate import HINT_TEMPLATES, generate_hints, model_calls
from nudgelib.policies.hf import HFPolicy
from nudgelib.tasks.problems import DataFormatError, DataNotFound, load_problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nudgelib.hints``: write a hint bank for a dataset, offline, before RL."""
    ap = argparse.ArgumentParser(prog="python -m nudgelib.hints",
                                 description="Generate a NuRL hint bank (saved as a datasets.Dataset).")
    ap.add_argument("--model", required=True,
                    help="hub id, local checkpoint or offline:smollm2-135m-instruct (the policy "
                         "you will train: self-hints; any other model: teacher hints)")
    ap.add_argument("--task", choices=("gsm8k", "math500"), default="gsm8k")
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, help="first N problems only")
    ap.add_argument("--types", nargs="+", default=["abstract"], choices=HINT_TYPES + CONTEXT_TYPES)
    ap.add_argument("--source", default="self", help="'self' or 'teacher:<name>'")
    ap.add_argument("--on-leak", choices=ON_LEAK, default="regenerate")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for dataset.save_to_disk")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except (HintBankError, DataFormatError, DataNotFound, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; nothing was saved to {args.out} (the bank is written at the end). "
              f"Run the same command again", file=sys.stderr)
        return 130


def _run(args) -> int:
    problems = load_problems(args.task, args.split, limit=args.limit)
    needs_model = any(model_calls(HINT_TEMPLATES[t]) for t in args.types)
    policy = HFPolicy.from_pretrained(args.model, lora_rank=0) if needs_model else None
    banks = [generate_hints(policy, problems, t, source=args.source, on_leak=args.on_leak,
                            batch_size=args.batch_size, progress=True,
                            generator=torch.Generator().manual_seed(args.seed))
             for t in args.types]
    bank = HintBank.merge(banks)
    bank.save(args.out)
    print(json.dumps({"out": args.out, "hints": len(bank),
                      "stats": [b.stats for b in banks]}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
