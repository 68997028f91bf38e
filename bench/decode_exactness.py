"""How close the lean loop's log-probs are to the reference loop's, token by token, on
``bench/rollouts.py``'s settings (SmolLM2-135M, LoRA r=16 with non-zero B, 4 GSM8K prompts x
G = 8, 64 tokens, T = 1), over several generator seeds; and, as the yardstick, how close the
reference loop (the code before issue 24) comes to itself.

    python bench/decode_exactness.py [--seeds 4] [--samplers race,cdf] [--json]

for each of HFPolicy's samplers (``race``, the default since the follow-up to issue 24, and
``cdf``, the inverse CDF before it).

Five comparisons, each over the tokens both sides drew (each row up to its first differing
token), with the share within 1e-5, the mean and largest difference, and the rows that
diverged:

* ``lean_vs_reference``: the lean loop against the reference loop, same generator;
* ``lean_unpacked_vs_reference``: the same with the lean loop's weights unpacked
  (``pack_weights=False``: torch's own product instead of oneDNN's packed one);
* ``reference_32_vs_16``: the reference loop on the 32 rows at once against the same rows as
  two calls of 16 (the same uniform number for each row and step: the draw is replaced by a
  table for both), i.e. the old code under a change of batch size only;
* ``reference_vs_scoring``: the reference loop's sampling log-probs against the same tokens
  scored by the old code's own training forward (``logprobs``, unpacked), i.e. the two
  computations of one log-prob that a GRPO step's ratio compares;
* ``lean_vs_scoring``: the same for the code now: the lean loop's log-probs against its tokens
  scored by the training forward as it runs now (packed weights).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math

import torch


def compare(a, b, la=None, lb=None) -> dict:
    """Per-token |logp difference| of two Samples of the same rows, up to each row's first
    differing token (``la``/``lb`` replace the log-probs, e.g. by a scoring pass's)."""
    la = a.logp if la is None else la
    lb = b.logp if lb is None else lb
    width = min(a.completion_ids.shape[1], b.completion_ids.shape[1])
    diffs, logps, diverged = [], [], []
    for r in range(a.completion_ids.shape[0]):
        m = (a.completion_mask[r, :width] * b.completion_mask[r, :width]).bool()
        differ = ((a.completion_ids[r, :width] != b.completion_ids[r, :width]) & m).nonzero()
        n = int(differ[0]) if len(differ) else int(m.sum())
        if len(differ):
            diverged.append((float(la[r, n]), float(lb[r, n])))
        diffs.append((la[r, :n] - lb[r, :n]).abs())
        logps.append(la[r, :n])
    return {"diffs": torch.cat(diffs), "logps": torch.cat(logps), "diverged": diverged,
            "rows": a.completion_ids.shape[0]}


def summary(parts: list[dict]) -> dict:
    d = torch.cat([p["diffs"] for p in parts])
    lp = torch.cat([p["logps"] for p in parts])
    diverged = [x for p in parts for x in p["diverged"]]
    likely = lp >= math.log(0.01)
    return {"tokens": int(d.numel()), "within_1e-5": round(float((d <= 1e-5).float().mean()), 5),
            "mean_abs": float(d.mean()), "max_abs": float(d.max()),
            "logp_at_max": float(lp[d.argmax()]),
            "max_abs_p_ge_0.01": float(d[likely].max()), "tokens_p_ge_0.01": int(likely.sum()),
            "within_1e-5_p_ge_0.01": round(float((d[likely] <= 1e-5).float().mean()), 5),
            "rows": sum(p["rows"] for p in parts), "diverged_rows": len(diverged),
            "diverged_at_logp": [[round(x, 2), round(y, 2)] for x, y in diverged]}


@contextlib.contextmanager
def tabled_draws(table: torch.Tensor, rows: torch.Tensor):
    """The reference loop draws row ``rows[i]``'s numbers of step t from ``table[rows[i], t]``
    instead of from its generator (nothing else of the loop changes)."""
    import nudgelib.policies.hf as lm_policy

    real, step = lm_policy.sample_next, [0]

    def tabled(logits, temperature, top_p, generator, uniforms=None, method="cdf"):
        u = table[rows, step[0]]
        step[0] += 1
        return real(logits, temperature, top_p, generator, uniforms=u, method=method)

    lm_policy.sample_next = tabled
    try:
        yield
    finally:
        lm_policy.sample_next = real


def joined(parts):
    """Samples of disjoint rows stacked into one (completions right-padded to one width)."""
    from types import SimpleNamespace

    from nudgelib.policies.base import right_pad

    width = max(p.completion_ids.shape[1] for p in parts)

    def cat(name):
        return torch.cat([right_pad(getattr(p, name), width, 0) for p in parts])

    return SimpleNamespace(completion_ids=cat("completion_ids"), logp=cat("logp"),
                           completion_mask=cat("completion_mask"))


def main(argv=None) -> int:
    from rollouts import benchmark_policy  # bench/ is the script's folder: on sys.path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--samplers", default="race,cdf",
                    help="HFPolicy samplers to measure, each on its own (comma-separated)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pol, texts = benchmark_policy(4)
    results = {}
    for sampler in args.samplers.split(","):
        results[sampler] = measure(pol, texts, args.seeds, sampler)
        for name, s in results[sampler].items():
            print(f"-- {sampler}: {name}")
            for k, v in s.items():
                print(f"   {k}: {v}")
    if args.json:
        print(json.dumps(results))
    return 0


def measure(pol, texts, seeds: int, sampler: str) -> dict:
    """The five comparisons over ``seeds`` generator seeds, ``pol`` drawing with ``sampler``."""
    from nudgelib.policies.base import draws_per_row

    pol.sampler = sampler
    group, tokens = 8, 64
    vocab = pol.model.get_output_embeddings().out_features

    @contextlib.contextmanager
    def loop(lean, pack):
        """The policy with the lean loop on or off and its weights packed or not (then back
        to the defaults: both on)."""
        pol.fast_decode, pol.pack_weights = lean, pack
        try:
            yield
        finally:
            pol.fast_decode = pol.pack_weights = True

    def sample(seed, lean, prompts=(0, 1, 2, 3), pack=None):
        with loop(lean, lean if pack is None else pack):
            return pol.sample([texts[i] for i in prompts], group, temperature=1.0,
                              max_new_tokens=tokens,
                              generator=torch.Generator().manual_seed(seed))

    def scored(s, pack):
        """``s``'s tokens scored by the training forward (packed weights or not)."""
        with loop(True, pack), torch.no_grad():
            return pol.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids,
                                s.completion_mask)

    out = {name: [] for name in ("lean_vs_reference", "lean_unpacked_vs_reference",
                                 "reference_32_vs_16", "reference_vs_scoring", "lean_vs_scoring")}
    for seed in range(seeds):
        ref, lean = sample(seed, False), sample(seed, True)
        out["lean_vs_reference"].append(compare(ref, lean))
        out["lean_unpacked_vs_reference"].append(compare(ref, sample(seed, True, pack=False)))
        table = torch.rand(len(texts) * group, tokens, draws_per_row(sampler, vocab),
                           dtype=torch.float64,
                           generator=torch.Generator().manual_seed(1_000 + seed))
        with tabled_draws(table, torch.arange(len(texts) * group)):
            whole = sample(seed, False)
        halves = []
        for pair in ((0, 1), (2, 3)):
            rows = torch.arange(pair[0] * group, (pair[-1] + 1) * group)
            with tabled_draws(table, rows):
                halves.append(sample(seed, False, prompts=pair))
        out["reference_32_vs_16"].append(compare(whole, joined(halves)))
        # the old code scores unpacked; the code now, packed
        out["reference_vs_scoring"].append(compare(ref, ref, lb=scored(ref, pack=False)))
        out["lean_vs_scoring"].append(compare(lean, lean, lb=scored(lean, pack=True)))
    return {k: summary(v) for k, v in out.items()}


if __name__ == "__main__":
    raise SystemExit(main())
