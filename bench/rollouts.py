"""Completion tokens/s of nudgelib's sampler vs plain ``generate``, and this machine's limit.

    python bench/rollouts.py [--rounds 3] [--json]

Same settings as bench/step_vs_trl.py: SmolLM2-135M (offline) with a LoRA r=16 adapter on all
linear layers (as during training: unmerged), 4 GSM8K prompts x G=8, 64 new tokens, T=1.0,
fp32, CPU. Three samplers, alternating within each round after a warm-up:

* ``generate``: ``model.generate(do_sample=True)`` on the 32 prompt rows (what TRL does);
* ``nudgelib-unshared``: nudgelib's KV-cached loop, every row prefilled on its own;
* ``nudgelib``: the same loop prefilling each distinct prompt once (the default).

Tokens/s counts completion tokens up to and including EOS. For context, the compute-bound limit:
FLOPs per generated token (2 x the matmul parameters touched, LM head included, + attention
over the context) against the fp32 matmul FLOP/s measured on this machine.
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


def flops_per_token(model, context: int) -> float:
    """2 x parameters of every Linear the token passes (LoRA included) + attention scores and
    mixing over ``context`` positions."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = lm.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    attention = 4 * cfg.num_hidden_layers * context * cfg.num_attention_heads * head_dim
    return 2 * linear + attention


def main(argv=None) -> int:
    from nudgelib.config import SHORT_ANSWER_INSTRUCTION, TrainConfig, build_problems
    from nudgelib.lm_policy import HFPolicy
    from nudgelib.policies import completion_mask, left_pad
    from nudgelib.presets import OFFLINE_SMOLLM2

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = TrainConfig(policy="hf", task="gsm8k", model_id=OFFLINE_SMOLLM2,
                      n_train_problems=args.prompts, problem_selection="shortest")
    problems = build_problems(cfg)
    torch.manual_seed(0)
    pol = HFPolicy.from_pretrained(OFFLINE_SMOLLM2, lora_rank=args.rank,
                                   instruction=SHORT_ANSWER_INSTRUCTION)
    with torch.no_grad():  # a trained-looking adapter (B starts at 0): its matmuls still run
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    texts = [p.question for p in problems]
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

    def run_nudgelib(seed, share):
        pol.share_prompts = share
        s = pol.sample(texts, args.group, temperature=1.0, max_new_tokens=args.tokens,
                       generator=torch.Generator().manual_seed(seed))
        pol.share_prompts = True
        return int(s.completion_mask.sum())

    samplers = {"generate": run_generate,
                "nudgelib-unshared": lambda seed: run_nudgelib(seed, False),
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
    flops = matmul_flops()
    context = int(mask.sum(1).float().mean()) + args.tokens // 2
    per_token = flops_per_token(pol.model, context)
    limit = flops / per_token
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("\n| sampler | median tokens/s | vs generate | share of compute limit |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / med['generate']:.2f} | {v / limit:.2f} |")
    print(f"\nlimit: {flops / 1e9:.1f} GFLOP/s (fp32 matmul, {torch.get_num_threads()} threads) / "
          f"{per_token / 1e6:.0f} MFLOP per token (context {context}) = {limit:.0f} tokens/s")
    if args.json:
        print(json.dumps({"tokens_per_s": {k: round(v, 1) for k, v in med.items()},
                          "ratio_vs_generate": round(med["nudgelib"] / med["generate"], 3),
                          "matmul_gflops": round(flops / 1e9, 1),
                          "mflop_per_token": round(per_token / 1e6, 1),
                          "compute_limit_tokens_per_s": round(limit, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
