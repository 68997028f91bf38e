"""Where one decode step's time goes: transformers' forward step by step (the sampler before
issue 24) vs nudgelib's lean loop, per op category, from torch.profiler.

    python bench/decode_profile.py [--prompts 4] [--group 8] [--tokens 64]

Settings of bench/rollouts.py (SmolLM2-135M offline, LoRA r=16 with a non-zero B, 4 GSM8K
prompts x G=8 = 32 rows, 64 new tokens, T=1, fp32, CPU). One warm-up call, then one profiled
call per loop; self CPU time of each op, summed per category and divided by the call's
decode steps (so prefill and packing are spread over them, as a call pays them). The LM head
is told apart from the layers' products by its output width (the vocabulary). The profiler
adds time to every op; the last row is an unprofiled call's wall time per step.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

CATEGORIES = {  # op name -> category (ops not listed: "other ops, Python")
    "aten::mm": "matrix products", "aten::addmm": "matrix products",
    "mkldnn::_linear_pointwise": "matrix products",
    "aten::bmm": "attention", "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_softmax": "attention", "aten::masked_fill_": "attention",
    "aten::cat": "KV cache growth (concatenation)",
    "aten::_log_softmax": "sampling (vocabulary)", "aten::exp": "sampling (vocabulary)",
    "aten::cumsum": "sampling (vocabulary)", "aten::searchsorted": "sampling (vocabulary)",
    "aten::div": "sampling (vocabulary)",
    # the race sampler (NUDGE_SAMPLER=race, the default): block sums, log E, the two argmaxes
    "aten::log1p": "sampling (vocabulary)", "aten::log": "sampling (vocabulary)",
    "aten::argmax": "sampling (vocabulary)", "aten::max": "sampling (vocabulary)",
    "aten::constant_pad_nd": "sampling (vocabulary)", "aten::sum": "sampling (vocabulary)",
    "mkldnn::_reorder_linear_weight": "weight packing",
}
ORDER = ["matrix products", "LM head", "attention", "KV cache growth (concatenation)",
         "sampling (vocabulary)", "weight packing", "other ops, Python"]


def main(argv=None) -> int:
    from rollouts import benchmark_policy  # bench/ is the script's folder: on sys.path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args(argv)
    pol, texts = benchmark_policy(args.prompts)
    vocab = pol.model.get_output_embeddings().weight.shape[0]
    table = {}
    for name, lean in (("transformers forward (before)", False), ("lean loop (now)", True)):
        pol.fast_decode = pol.pack_weights = lean

        def call():
            return pol.sample(texts, args.group, temperature=1.0, max_new_tokens=args.tokens,
                              generator=torch.Generator().manual_seed(1))

        call()
        t = time.perf_counter()
        s = call()
        plain = (time.perf_counter() - t) * 1e3 / s.completion_ids.shape[1]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter()
            s = call()
            wall = time.perf_counter() - t
        steps = s.completion_ids.shape[1]
        ms = dict.fromkeys(ORDER, 0.0)
        for ev in prof.key_averages(group_by_input_shape=True):
            cat = CATEGORIES.get(ev.key)
            if cat == "matrix products" and any(vocab in sh for sh in ev.input_shapes
                                                if isinstance(sh, list)):
                cat = "LM head"
            ms[cat or "other ops, Python"] += ev.self_cpu_time_total / 1e3 / steps
        table[name] = (ms, wall * 1e3 / steps, plain)
    names = list(table)
    print(f"\n| per decode step, ms ({args.prompts * args.group} rows) | "
          + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for cat in ORDER:
        print(f"| {cat} | " + " | ".join(f"{table[n][0][cat]:.1f}" for n in names) + " |")
    print("| step, wall, profiled | " + " | ".join(f"{table[n][1]:.1f}" for n in names) + " |")
    print("| **step, wall, not profiled** | "
          + " | ".join(f"**{table[n][2]:.1f}**" for n in names) + " |")
    print("\n(the profiler adds time per op: the lean loop runs more, smaller ops)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
