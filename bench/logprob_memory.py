"""Peak memory of per-token log-probs: naive log_softmax(logits) vs nudgelib's chunked path.

    python bench/logprob_memory.py [--batch 2] [--completion 2048] [--prompt 64]

Model: SmolLM2-135M-Instruct (offline checkpoint, vocab 49,152), float32 on CPU (bfloat16 on
a GPU). Two measurements, each variant in its own subprocess:

* ``model``: the full training computation — forward through the model (frozen weights, input
  gradients on, like LoRA), log-probs of the completion tokens, backward;
* ``model-gc``: the same with gradient checkpointing of the decoder layers (how long
  sequences are trained: the body's activations no longer hide the logits);
* ``head``: only the part that differs — final hidden states -> log-probs -> backward.

``naive`` = ``torch.log_softmax(model(ids).logits.float(), -1)`` gathered at the targets (what
many trainers do); ``chunked`` = :meth:`nudgelib.policies.hf.HFPolicy.logprobs`, which calls the
model body and :func:`nudgelib.policies.base.chunked_token_logprobs` (checkpointed chunks of
positions). Peak is measured above the memory in use just before the call: on CPU from the
kernel's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs), on CUDA
from ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure(variant: str, what: str, batch: int, completion: int, prompt: int) -> dict:
    import torch

    from nudgelib.policies.base import chunked_token_logprobs
    from nudgelib.policies.hf import HFPolicy
    from nudgelib.policies.models import offline_model_path

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    dtype = "bfloat16" if cuda else "float32"
    torch.manual_seed(0)
    pol = HFPolicy.from_pretrained(str(offline_model_path()), lora_rank=0, device=dev,
                                   dtype=dtype, gradient_checkpointing=what == "model-gc")
    model = pol.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    model.enable_input_require_grads()
    vocab = model.config.vocab_size
    p_ids = torch.randint(0, vocab, (batch, prompt), device=dev)
    c_ids = torch.randint(0, vocab, (batch, completion), device=dev)
    p_mask = torch.ones_like(p_ids)
    c_mask = torch.ones(batch, completion, device=dev)
    hidden = None
    if what == "head":
        with torch.no_grad():
            hidden = model.model(input_ids=torch.cat([p_ids, c_ids], 1)).last_hidden_state
        hidden = hidden[:, prompt - 1:-1].detach().clone().requires_grad_(True)
    head = model.get_output_embeddings()

    def run():
        if what == "head":
            if variant == "naive":
                logits = head(hidden).float()
                lp = torch.log_softmax(logits, -1).gather(-1, c_ids[..., None]).squeeze(-1)
            else:
                lp = chunked_token_logprobs(hidden, c_ids, head)
        elif variant == "naive":
            ids = torch.cat([p_ids, c_ids], 1)
            logits = model(input_ids=ids).logits[:, prompt - 1:-1]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, c_ids[..., None]).squeeze(-1)
        else:
            lp = pol.logprobs(p_ids, p_mask, c_ids, c_mask)
        (lp * c_mask).sum().backward()
        return lp.detach()

    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        lp = run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_kb("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        lp = run()
        peak = _rss_kb("VmHWM") * 1024 - base
    return {"variant": variant, "what": what, "device": dev, "dtype": dtype, "vocab": vocab,
            "batch": batch, "completion_tokens": completion, "prompt_tokens": prompt,
            "peak_mb": round(peak / 2**20, 1), "logp_checksum": round(float(lp.sum()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--completion", type=int, default=2048)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(*args.child, args.batch, args.completion, args.prompt)))
        return
    results = []
    for what in ("model", "model-gc", "head"):
        for variant in ("naive", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, what,
                                  "--batch", str(args.batch), "--completion",
                                  str(args.completion), "--prompt", str(args.prompt)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    for what in ("model", "model-gc", "head"):
        naive = next(r for r in results if r["what"] == what and r["variant"] == "naive")
        chunk = next(r for r in results if r["what"] == what and r["variant"] == "chunked")
        same = abs(naive["logp_checksum"] - chunk["logp_checksum"]) <= 1e-4 * abs(
            naive["logp_checksum"]) + 1e-2
        print(f"{what:8s}: naive {naive['peak_mb']:8.1f} MB  chunked {chunk['peak_mb']:8.1f} MB"
              f"  ratio {chunk['peak_mb'] / naive['peak_mb']:.3f}  same log-probs: {same}")


if __name__ == "__main__":
    main()
