"""Hint lift on SmolLM2-135M-Instruct (offline) and GSM8K: the issue-6 table.

    NUDGE_DATA_DIR=../shared/data python bench/hint_lift.py [--problems 64] [--out bench/results]

1. Screen the shortest GSM8K train questions, in order, until ``--problems`` of them are 0/8
   without a hint.
2. Hints for those problems: self-generated abstract hints (two calls to the same model,
   leakage-checked and regenerated up to 3 times), teacher hints (the first half of the
   human-written GSM8K solution; a leaking one is dropped), answer hints ("The answer is X.").
3. pass@1 and pass@8 with each kind of hint (G = 8, same sampling as the screen).

Writes ``hint_lift.json`` and ``hint_lift.md`` (the table) and a parquet of the hints and the
hinted rollouts to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nudgelib.evaluate import hint_lift, zero_pass_problems
from nudgelib.hints.generate import generate_hints, reference_hints
from nudgelib.policies.hf import HFPolicy
from nudgelib.presets import SHORT_ANSWER_INSTRUCTION
from nudgelib.tasks.problems import load_problems
from nudgelib.tasks.rewards import MathScorer


def markdown(frame) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--screen", type=int, default=200, help="screen at most this many")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    policy = HFPolicy.from_pretrained(args.model, lora_rank=0,
                                      instruction=SHORT_ANSWER_INSTRUCTION)
    pool = sorted(load_problems("gsm8k", "train"), key=lambda p: (len(p.question), p.id))
    pool = pool[:args.screen]
    scorer = MathScorer()
    sampling = dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                    generator=torch.Generator().manual_seed(args.seed))
    t = time.perf_counter()
    hard, counts = zero_pass_problems(policy, pool, scorer, n_samples=args.samples,
                                      limit=args.problems, progress=True, **sampling)
    t_screen = time.perf_counter() - t
    print(f"{len(hard)} problems 0/{args.samples} out of {len(counts)} screened "
          f"({t_screen:.0f} s)", flush=True)
    self_bank = generate_hints(policy, hard, "abstract", source="self",
                               generator=torch.Generator().manual_seed(args.seed + 1),
                               max_explanation_tokens=128, max_hint_tokens=48, progress=True)
    print("self hints:", self_bank.stats, flush=True)
    teacher = reference_hints(hard, "partial_steps")
    answer = generate_hints(policy, hard, "answer", source="template")
    banks = {"self abstract": self_bank, "teacher (reference first steps)": teacher,
             "answer": answer}
    kinds = {"self abstract": "abstract", "teacher (reference first steps)": "partial_steps",
             "answer": "answer"}
    table = hint_lift(policy, hard, banks, scorer, hint_type=kinds, n_samples=args.samples,
                      progress=True, **sampling)
    print(table.to_string(), flush=True)
    for name, frame in table.attrs["rollouts"].items():
        frame.to_parquet(out / f"hint_lift_rollouts_{name.split()[0]}.parquet")
    for name, bank in banks.items():
        bank.to_pandas().to_parquet(out / f"hint_lift_hints_{name.split()[0]}.parquet")
    result = {
        "command": "python bench/hint_lift.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "model": args.model, "instruction": SHORT_ANSWER_INSTRUCTION,
        "screened": len(counts), "zero_pass": len(hard), "screen_seconds": round(t_screen, 1),
        "self_hint_stats": self_bank.stats, "teacher_stats": teacher.stats,
        "table": table.to_dict(orient="records"),
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "hint_lift.json").write_text(json.dumps(result, indent=1))
    md = markdown(table.drop(columns=["seconds"]))
    (out / "hint_lift.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
