"""Evaluation: hint-free pass@k of a base model and its LoRA adapters, with confidence intervals.

    suite = ModelSuite("offline:smollm2-135m-instruct",
                       {"GRPO": "runs/grpo/adapter", "NuRL": "runs/nurl/adapter"})
    results = compare(suite, {"gsm8k": gsm8k_test[:64], "math500": math500[:64]},
                      n_samples=16, max_new_tokens=256)
    results_frame(results)            # one row per dataset x model x k, with 95 % CIs
    paired_difference(results["gsm8k"]["NuRL"], results["gsm8k"]["GRPO"], k=16)

pass@k is the unbiased estimator (:func:`nudgelib.core.stats.pass_at_k`) from ``n_samples``
hint-free samples per problem; its 95 % interval is a percentile bootstrap over problems.
Every model is sampled with the same seed on the same problems, and differences between two
models are bootstrapped over the same resampled problems (paired), which is much tighter than
comparing two separate intervals.

All adapters sit on one copy of the base model (``peft`` adapters switched by name; the base is
the adapters disabled), so evaluating three models costs one model's memory.

The other measurement lives here too: how much a hint helps on the problems a policy cannot
solve alone, which is what NuRL's nudge needs (docs/method.md §2.5):

    hard, counts = zero_pass_problems(policy, problems, scorer, n_samples=8, limit=16)
    hint_lift(policy, hard, {"self": self_bank, "teacher": teacher_bank}, scorer)

Hints are used ONLY by :func:`hint_lift` (a training-side diagnostic); every pass@k function
above samples the plain question.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from nudgelib.core.advantages import compute_advantages
from nudgelib.core.stats import bootstrap_ci, per_problem_pass_at_k, power_of_two_ks
from nudgelib.hints.bank import HintBank
from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.policies.hf import HFPolicy
from nudgelib.rollouts import collect_rollouts, evaluate_pass_counts
from nudgelib.tasks.problems import Problem
from nudgelib.tasks.rewards import MathScorer
from nudgelib.ui.plots import pass_at_k_curves

BASE = "base"
CONFIG_NEXT_TO_ADAPTER = ("nudgelib_config.json", "../config.json")


def adapter_run_config(path: str | os.PathLike) -> dict | None:
    """The training config saved beside an adapter (``out/adapter`` or a checkpoint's
    ``policy`` folder), or None for an adapter from elsewhere."""
    path = Path(path)
    for name in CONFIG_NEXT_TO_ADAPTER:
        f = path / name
        if f.is_file():
            return json.loads(f.read_text())
    return None


class ModelSuite:
    """A base model and named LoRA adapters on one copy of its weights.

    ``instruction`` is appended to every question, as in training; by default it is read from
    the adapters' saved training config (all must agree), else the policy default; so is
    ``stop_at_newline``. ``dtype``,
    ``device``, ``load_in_4bit`` as in :meth:`nudgelib.policies.hf.HFPolicy.from_pretrained`.
    """

    def __init__(self, model_id: str, adapters: Mapping[str, str | os.PathLike] | None = None, *,
                 instruction: str | None = None, dtype: str | None = None,
                 device: str | None = None, load_in_4bit: bool = False):

        adapters = dict(adapters or {})
        if BASE in adapters:
            raise ValueError(f"adapter name {BASE!r} is reserved for the model without adapter")
        for name, path in adapters.items():
            if not (Path(path) / "adapter_config.json").is_file():
                raise FileNotFoundError(f"adapters[{name!r}] = {str(path)!r} is not a PEFT "
                                        f"adapter folder (no adapter_config.json)")
        runs = [c for p in adapters.values() if (c := adapter_run_config(p))]
        if instruction is None:
            found = {c["instruction"] for c in runs if "instruction" in c}
            if len(found) > 1:
                raise ValueError(f"the adapters were trained with different instructions "
                                 f"{sorted(found)}; pass instruction= explicitly")
            instruction = found.pop() if found else None
        kw = {"instruction": instruction} if instruction is not None else {}
        stops = {bool(c.get("stop_at_newline", False)) for c in runs}
        if len(stops) > 1:
            raise ValueError("the adapters were trained with and without stop_at_newline; "
                             "evaluate them in separate suites")
        if stops:
            kw["stop_at_newline"] = stops.pop()
        self.policy = HFPolicy.from_pretrained(model_id, lora_rank=0, dtype=dtype, device=device,
                                               load_in_4bit=load_in_4bit, **kw)
        self.model_id, self.adapters = model_id, adapters
        if adapters:
            from peft import PeftModel

            names = list(adapters)
            model = PeftModel.from_pretrained(self.policy.model, str(adapters[names[0]]),
                                              adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(adapters[name]), adapter_name=name)
            model.eval()
            self.policy.model = model

    @property
    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    @contextmanager
    def use(self, name: str):
        """The policy with adapter ``name`` active (``"base"``: no adapter)."""
        if name not in self.names:
            raise KeyError(f"unknown model {name!r}; this suite has {self.names}")
        if name == BASE:
            if self.adapters:
                with self.policy.model.disable_adapter():
                    yield self.policy
            else:
                yield self.policy
            return
        self.policy.model.set_adapter(name)
        yield self.policy


def evaluate_pass_at_k(policy, problems: Sequence[Problem], scorer=None, *, n_samples: int,
                       ks: Sequence[int] | None = None, temperature: float = 0.7,
                       top_p: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
                       prompts_per_call: int | None = None, n_boot: int = 2000,
                       progress: bool = False) -> dict:
    """Hint-free pass@k of ``policy`` on ``problems`` from ``n_samples`` samples each.

    Returns a dict: ``ks``, ``pass_at_k`` (mean over problems, per k), ``ci95`` ((low, high)
    per k, bootstrap over problems), ``counts`` (correct samples per problem), ``problem_ids``,
    ``n_samples``, ``seconds``, ``tokens`` (completion tokens sampled) and ``tokens_per_s``.
    """
    problems = list(problems)
    if len(problems) < 2:
        raise ValueError(f"evaluate_pass_at_k needs at least 2 problems for an interval, got "
                         f"{len(problems)}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    ks = list(ks) if ks is not None else power_of_two_ks(n_samples)
    if any(k < 1 or k > n_samples for k in ks):
        raise ValueError(f"every k must be in [1, n_samples={n_samples}], got {ks}")
    t0 = time.perf_counter()
    batch = collect_rollouts(policy, problems, scorer or MathScorer(), group_size=n_samples,
                             temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                             generator=torch.Generator().manual_seed(seed),
                             prompts_per_call=prompts_per_call, progress=progress)
    seconds = time.perf_counter() - t0
    counts = [int(c) for c in batch.group_pass_counts().tolist()]
    per = per_problem_pass_at_k([(n_samples, c) for c in counts], ks)
    lo, hi = bootstrap_ci(per, n_boot=n_boot, seed=seed)
    tokens = int(batch.lengths.sum())
    return {"ks": ks, "pass_at_k": {k: float(v) for k, v in zip(ks, per.mean(0))},
            "ci95": {k: (float(a), float(b)) for k, a, b in zip(ks, lo, hi)},
            "counts": counts, "problem_ids": [p.id for p in problems], "n_samples": n_samples,
            "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
            "truncated_frac": float(batch.truncated.float().mean()),
            "sampling": policy.sampling_info()}


def compare(suite: ModelSuite, datasets: Mapping[str, Sequence[Problem]], *,
            models: Sequence[str] | None = None, progress: bool = False, **kwargs) -> dict:
    """``results[dataset][model]`` = :func:`evaluate_pass_at_k` for every model of ``suite``
    (default: base and all adapters) on every dataset, same seed and problems for all."""
    out: dict = {}
    for dname, probs in datasets.items():
        out[dname] = {}
        for name in models or suite.names:
            with suite.use(name) as policy:
                out[dname][name] = evaluate_pass_at_k(policy, probs, progress=progress, **kwargs)
            if progress:
                r = out[dname][name]
                print(f"{dname:>10} {name:>8}: pass@1 {r['pass_at_k'][r['ks'][0]]:.3f}  "
                      f"pass@{r['ks'][-1]} {r['pass_at_k'][r['ks'][-1]]:.3f}  "
                      f"({r['seconds']:.0f} s, {r['tokens_per_s']} tok/s)", flush=True)
    return out


def paired_difference(a: dict, b: dict, k: int, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """pass@k of result ``a`` minus result ``b`` on the same problems, with a paired bootstrap
    95 % interval (problems resampled together for both)."""
    if a["problem_ids"] != b["problem_ids"]:
        raise ValueError("paired_difference needs two results on the same problems in the "
                         "same order")
    if a["n_samples"] < k or b["n_samples"] < k:
        raise ValueError(f"k={k} exceeds n_samples ({a['n_samples']}, {b['n_samples']})")
    pa = per_problem_pass_at_k([(a["n_samples"], c) for c in a["counts"]], [k])[:, 0]
    pb = per_problem_pass_at_k([(b["n_samples"], c) for c in b["counts"]], [k])[:, 0]
    lo, hi = bootstrap_ci(pa - pb, n_boot=n_boot, seed=seed)
    return {"k": k, "diff": float(np.mean(pa - pb)), "ci95": (lo, hi)}


def results_frame(results: Mapping[str, Mapping[str, dict]]):
    """One row per dataset x model x k: pass@k with its 95 % interval, problems, samples."""
    import pandas as pd

    rows = []
    for dname, by_model in results.items():
        for name, r in by_model.items():
            for k in r["ks"]:
                lo, hi = r["ci95"][k]
                rows.append({"dataset": dname, "model": name, "k": k,
                             "pass@k": r["pass_at_k"][k], "ci_low": lo, "ci_high": hi,
                             "problems": len(r["counts"]), "n_samples": r["n_samples"]})
    return pd.DataFrame(rows)


def pass_at_k_figure(results_for_dataset: Mapping[str, dict], title: str = "pass@k"):
    """pass@k curves (one per model) with their 95 % bands."""

    ks = next(iter(results_for_dataset.values()))["ks"]
    return pass_at_k_curves(
        ks, {m: [r["pass_at_k"][k] for k in ks] for m, r in results_for_dataset.items()},
        bands={m: [r["ci95"][k] for k in ks] for m, r in results_for_dataset.items()},
        title=title)


def save_results(results: Mapping, path: str | os.PathLike, **meta) -> Path:
    """Write ``results`` (from :func:`compare`) and ``meta`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {d: {m: {**r, "pass_at_k": {str(k): v for k, v in r["pass_at_k"].items()},
                     "ci95": {str(k): list(v) for k, v in r["ci95"].items()}}
                 for m, r in by.items()} for d, by in results.items()}
    path.write_text(json.dumps({"meta": meta, "results": clean}, indent=1))
    return path


# ----------------------------------------------------------------------------- hint lift (training problems, with hints)

def zero_pass_problems(policy, problems: Sequence[Problem], scorer, *, n_samples: int = 8,
                       limit: int | None = None, prompts_per_call: int = 8, progress: bool = False,
                       **sampling) -> tuple[list[Problem], list[int]]:
    """The problems (at most ``limit``) that ``policy`` solves 0 / ``n_samples`` times without a
    hint, screened in order, and the pass counts of every problem screened."""
    kept, counts = [], []
    for i in range(0, len(problems), prompts_per_call):
        chunk = list(problems[i:i + prompts_per_call])
        got = evaluate_pass_counts(policy, chunk, scorer, n_samples=n_samples,
                                   prompts_per_call=prompts_per_call, **sampling)
        counts.extend(got)
        kept.extend(p for p, c in zip(chunk, got) if c == 0)
        if progress:
            print(f"screened {len(counts)} problems, {len(kept)} are 0/{n_samples}", flush=True)
        if limit is not None and len(kept) >= limit:
            return kept[:limit], counts
    return kept, counts


def hint_lift(policy, problems: Sequence[Problem], banks: Mapping[str, HintBank], scorer, *,
              hint_type: Mapping[str, str] | str = "abstract", n_samples: int = 8,
              prompts_per_call: int = 8, progress: bool = False, **sampling):
    """pass@1 and pass@``n_samples`` of ``policy`` on ``problems`` with each bank's hints.

    Returns a pandas DataFrame, one row per bank name: problems with a hint, pass@1, pass@n
    with a 95% bootstrap interval over problems, and the hinted rollouts themselves in
    ``frame.attrs["rollouts"]`` (one DataFrame per bank). Problems without a hint in a bank
    are left out of that bank's row (their count is reported).
    """
    import pandas as pd

    rows, rollouts = [], {}
    for name, bank in banks.items():
        kind = hint_type if isinstance(hint_type, str) else hint_type[name]
        pairs = [(p, bank.lookup(p.id, kind)) for p in problems]
        pairs = [(p, h) for p, h in pairs if h is not None]
        if not pairs:
            rows.append({"hints": name, "problems": 0, "missing": len(problems)})
            continue
        t0 = time.perf_counter()
        batch = collect_rollouts(policy, [p for p, _ in pairs], scorer, group_size=n_samples,
                                 hints=[h for _, h in pairs], prompts_per_call=prompts_per_call,
                                 progress=progress, **sampling)
        counts = batch.group_pass_counts().long().tolist()
        p1, pn = per_problem_pass_at_k([(n_samples, c) for c in counts], [1, n_samples]).T
        lo, hi = bootstrap_ci(pn) if len(pn) > 1 else (float("nan"), float("nan"))
        rows.append({"hints": name, "problems": len(pairs), "missing": len(problems) - len(pairs),
                     "pass@1": float(p1.mean()), f"pass@{n_samples}": float(pn.mean()),
                     "ci_low": float(lo), "ci_high": float(hi),
                     "solved": int(sum(c > 0 for c in counts)),
                     "seconds": round(time.perf_counter() - t0, 1)})
        rollouts[name] = batch.to_frame()
    frame = pd.DataFrame(rows)
    frame.attrs["rollouts"] = rollouts
    return frame


def try_hint(policy, problem: Problem, hint: str, scorer, *, group_size: int = 8,
             generator: torch.Generator | None = None, **sampling) -> dict:
    """What one hint would do for one problem (notebook 05's hint lab): the leak check's verdict,
    G hint-free and G hinted rollouts (correct counts, pass@1 and pass@G from them), and the
    group NuRL would train on if the hint-free group is 0/G: the first hint-free failure kept,
    G - 1 hinted rows, their rewards and GRPO advantages."""
    hint = (hint or "").strip()
    if not hint:
        raise ValueError("try_hint needs a hint: write one")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    plain = collect_rollouts(policy, [problem], scorer, group_size=group_size, generator=gen,
                             **sampling)
    hinted = collect_rollouts(policy, [problem], scorer, group_size=group_size, hints=[hint],
                              generator=gen, **sampling)
    k_plain, k_hinted = int(plain.correct.sum()), int(hinted.correct.sum())
    out = {"question": problem.question, "answer": problem.answer, "hint": hint,
           "leaks": bool(hint_leaks_answer(hint, problem.answer)), "G": group_size,
           "plain_correct": k_plain, "hinted_correct": k_hinted,
           "plain_pass@1": k_plain / group_size, "hinted_pass@1": k_hinted / group_size,
           "plain_pass@G": float(k_plain > 0), "hinted_pass@G": float(k_hinted > 0),
           "fires": k_plain == 0, "plain_completions": list(plain.texts),
           "hinted_completions": list(hinted.texts)}
    if k_plain == 0:  # NuRL's group: the first (failed) hint-free row, then G - 1 hinted rows
        rewards = torch.cat([plain.rewards[:1], hinted.rewards[:group_size - 1]])
        adv = compute_advantages(rewards, torch.zeros(group_size, dtype=torch.long), "grpo")
        out.update(nurl_rewards=rewards.tolist(), nurl_advantages=adv.tolist(),
                   nurl_texts=[plain.texts[0], *hinted.texts[:group_size - 1]])
    return out
