"""Completion tokens/s of nudgelib's sampler vs plain ``generate``, and this machine's limit.

    python bench/rollouts.py [--rounds 3] [--json]

Same settings as bench/step_vs_trl.py: SmolLM2-135M (offline) with a LoRA r=16 adapter on all
linear layers (as during training: unmerged), 4 GSM8K prompts x G=8, 64 new tokens, T=1.0,
fp32, CPU. Three samplers, alternating within each round after a warm-up:

* ``generate``: ``model.generate(do_sample=True)`` on the 32 prompt rows (what TRL does);
* ``nudgelib-hf-forward``: nudgelib's loop through transformers' forward step by step, each
  distinct prompt prefilled once, LoRA folded in (the sampler before issue 24;
  ``fast_decode=False, pack_weights=False``);
* ``nudgelib``: the default, :mod:`nudgelib.policies.decode`'s lean loop on oneDNN-packed weights.

Tokens/s counts completion tokens up to and including EOS. The limits, in the same unit:

* compute-bound: FLOPs per generated token (2 x the matmul parameters touched, LM head
  included, + attention over the context) against the fp32 matmul FLOP/s of torch's default
  product (MKL) on a 1024^2 product -- the issue's definition; and the same against oneDNN's
  packed product, which on this AMD CPU runs at ~2.3x MKL's rate (MKL takes a slower path on
  non-Intel CPUs);
* memory-bound: every decode step reads every weight once; its bytes over the measured read
  bandwidth give the fastest a step of ``rows`` rows can be.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def matmul_flops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def packed_matmul_flops(n: int = 1024, repeats: int = 10) -> float:
    a, w = torch.randn(n, n), torch.randn(n, n)
    wp = torch.ops.mkldnn._reorder_linear_weight(w, n)
    torch.ops.mkldnn._linear_pointwise(a, wp, None, "none", [], "")
    t = time.perf_counter()
    for _ in range(repeats):
        torch.ops.mkldnn._linear_pointwise(a, wp, None, "none", [], "")
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def read_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    x = torch.ones(mb * 2**20 // 4)
    x.sum()
    t = time.perf_counter()
    for _ in range(repeats):
        x.sum()
    return x.numel() * 4 * repeats / (time.perf_counter() - t)


def flops_per_token(model, context: int) -> float:
    """2 x parameters of every Linear the token passes (LoRA included) + attention scores and
    mixing over ``context`` positions."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = lm.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attention = 4 * cfg.num_hidden_layers * context * cfg.num_attention_heads * head_dim
    return 2 * linear + attention


def benchmark_policy(prompts: int = 4, rank: int = 16):
    """The policy and prompt texts of these settings (also bench/decode_profile.py's and
    bench/decode_exactness.py's): SmolLM2-135M offline, LoRA ``rank`` on every linear layer
    with B drawn non-zero (a trained-looking adapter: its products still run), the short-answer
    instruction, the ``prompts`` shortest GSM8K train questions."""
    from nudgelib.policies.hf import HFPolicy
    from nudgelib.presets import OFFLINE_SMOLLM2, SHORT_ANSWER_INSTRUCTION
    from nudgelib.training.build import build_problems
    from nudgelib.training.config import TrainConfig

    cfg = TrainConfig(policy="hf", task="gsm8k", model_id=OFFLINE_SMOLLM2,
                      n_train_problems=prompts, problem_selection="shortest")
    texts = [p.question for p in build_problems(cfg)]
    torch.manual_seed(0)
    pol = HFPolicy.from_pretrained(OFFLINE_SMOLLM2, lora_rank=rank,
                                   instruction=SHORT_ANSWER_INSTRUCTION)
    with torch.no_grad():
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return pol, texts


def main(argv=None) -> int:
    from nudgelib.policies.base import completion_mask, left_pad

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pol, texts = benchmark_policy(args.prompts, args.rank)
    encoded = pol.encode_prompts(texts)
    ids, mask = left_pad([e for e in encoded for _ in range(args.group)], pol.pad_id)

    def run_generate(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = pol.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                     temperature=1.0, top_p=1.0, top_k=0,
                                     max_new_tokens=args.tokens, pad_token_id=pol.pad_id)
        comp = out[:, ids.shape[1]:]
        return int(completion_mask(comp, pol.eos_ids)[0].sum())

    def run_nudgelib(seed, lean):
        pol.fast_decode = pol.pack_weights = lean
        s = pol.sample(texts, args.group, temperature=1.0, max_new_tokens=args.tokens,
                       generator=torch.Generator().manual_seed(seed))
        pol.fast_decode = pol.pack_weights = True
        return int(s.completion_mask.sum())

    samplers = {"generate": run_generate,
                "nudgelib-hf-forward": lambda seed: run_nudgelib(seed, False),
                "nudgelib": lambda seed: run_nudgelib(seed, True)}
    rates = {k: [] for k in samplers}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name, fn in samplers.items():
            t = time.perf_counter()
            n = fn(1000 + r)
            dt = time.perf_counter() - t
            if r:
                rates[name].append(n / dt)
            print(f"{'warm-up' if r == 0 else f'round {r}'} {name:18s} {n:5d} tokens "
                  f"{dt:6.2f} s  {n / dt:7.1f} tokens/s", flush=True)
    flops, flops_packed, bandwidth = matmul_flops(), packed_matmul_flops(), read_bandwidth()
    context = int(mask.sum(1).float().mean()) + args.tokens // 2
    per_token = flops_per_token(pol.model, context)
    limit, limit_packed = flops / per_token, flops_packed / per_token
    weight_bytes = sum(p.numel() * p.element_size() for p in pol.model.parameters())
    limit_memory = ids.shape[0] / (weight_bytes / bandwidth)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("\n| sampler | median tokens/s | vs generate | share of compute limit (MKL rate) "
          "| share of compute limit (oneDNN rate) | share of memory limit |")
    print("|---|---|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / med['generate']:.2f} | {v / limit:.2f} | "
              f"{v / limit_packed:.2f} | {v / limit_memory:.2f} |")
    print(f"\ncompute limit: {flops / 1e9:.1f} GFLOP/s (fp32 MKL matmul, "
          f"{torch.get_num_threads()} threads) / {per_token / 1e6:.0f} MFLOP per token "
          f"(context {context}) = {limit:.0f} tokens/s; at oneDNN's {flops_packed / 1e9:.1f} "
          f"GFLOP/s: {limit_packed:.0f} tokens/s")
    print(f"memory limit: {weight_bytes / 1e6:.0f} MB of weights per step at "
          f"{bandwidth / 1e9:.1f} GB/s read, {ids.shape[0]} rows = {limit_memory:.0f} tokens/s")
    if args.json:
        print(json.dumps({"tokens_per_s": {k: round(v, 1) for k, v in med.items()},
                          "ratio_vs_generate": round(med["nudgelib"] / med["generate"], 3),
                          "ratio_vs_hf_forward": round(med["nudgelib"]
                                                       / med["nudgelib-hf-forward"], 3),
                          "share_of_compute_limit": round(med["nudgelib"] / limit, 3),
                          "share_of_compute_limit_onednn": round(med["nudgelib"] / limit_packed, 3),
                          "share_of_memory_limit": round(med["nudgelib"] / limit_memory, 3),
                          "matmul_gflops": round(flops / 1e9, 1),
                          "onednn_matmul_gflops": round(flops_packed / 1e9, 1),
                          "read_gb_per_s": round(bandwidth / 1e9, 1),
                          "mflop_per_token": round(per_token / 1e6, 1),
                          "compute_limit_tokens_per_s": round(limit, 1),
                          "compute_limit_onednn_tokens_per_s": round(limit_packed, 1),
                          "memory_limit_tokens_per_s": round(limit_memory, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
