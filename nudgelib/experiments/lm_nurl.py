"""NuRL on a real language model, on CPU: SmolLM2-135M-Instruct + LoRA on short-answer arithmetic.

    python -m nudgelib.experiments.lm_nurl --fast --seed S --out FILE.json      # CI, < 3 min
    python -m nudgelib.experiments.lm_nurl --seeds 0 1 2 --out data/results/lm_nurl.json \\
        --figures data/results                                                   # the results

The real-model sibling of :mod:`nudgelib.experiments.toy_nurl`. The training problems are
drawn from the ``train`` split of the arithmetic tiers (:mod:`nudgelib.tasks.arithmetic`) and the
evaluation problems from the ``heldout`` split (disjoint by construction), once, by
``problem_seed``; a seed sets the LoRA initialisation and every sample of training and
evaluation. Every arm starts from the same base model (LoRA's B = 0 makes the initial adapter
the base model exactly; the base is evaluated once) and takes the same number of RL steps:

=========  ===============================================================================
arm        what it is (docs/method.md §2.2–2.6)
=========  ===============================================================================
base       no training
grpo       plain GRPO for all ``steps``
nurl       two stages: the GRPO run up to its plateau (training reward; at most
           ``switch_max_step``), problems solved n/n dropped, then NuRL (0/G trigger, teacher
           partial-step hints on the hard tier) for the remaining steps, forked from GRPO's
           checkpoint (:func:`nudgelib.training.pipeline.find_plateau`, :meth:`Trainer.fork_from`)
always     the same two stages, but stage 2 shows the hint on every prompt that has one
nurl_self  optional: NuRL with the model's own abstract hints (two calls, leak-checked)
=========  ===============================================================================

Evaluation is WITHOUT hints, on the held-out problems of each tier: pass@k for k = 1, 2, 4, ...,
n from n samples per problem (the unbiased estimator), and the learnable share of the training
problems (at least one success in ``learnable_samples`` hint-free samples). The hint-lift table
(none / self / teacher / answer) is measured on the base model's 0/G hard training problems.
Across seeds: means, 95 % t-intervals and the paired differences of :data:`CLAIMS`, judged by
:func:`nudgelib.core.stats.verdict`. With one seed (``--fast``) the intervals of the
claims are t-intervals over held-out problems instead (``claims[].interval`` says which).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nudgelib.core.checks import ListFieldsDict, check_fields
from nudgelib.core.stats import (
    judge,
    mean_ci,
    pass_at_k_curve,
    per_problem_pass_at_k,
    power_of_two_ks,
)
from nudgelib.evaluate import hint_lift, zero_pass_problems
from nudgelib.experiments import lm_nurl_report as report
from nudgelib.experiments.toy_nurl import load_results, save_results
from nudgelib.hints.generate import generate_hints, reference_hints
from nudgelib.policies.base import SAMPLERS
from nudgelib.rollouts import evaluate_pass_counts
from nudgelib.tasks.arithmetic import TIERS, arithmetic_problems
from nudgelib.training.build import build_policy, build_scorer
from nudgelib.training.config import get_train_config
from nudgelib.training.pipeline import find_plateau, stage_configs
from nudgelib.training.trainer import resume_or_fork, resume_or_start

ARMS: dict[str, dict] = {
    "base": {},
    "grpo": {"nudging": "none"},
    "nurl": {"nudging": "nurl"},
    "always": {"nudging": "always"},
    "nurl_self": {"nudging": "nurl", "hint_source": "self", "hint_type": "abstract"},
}
"""Arm name -> TrainConfig overrides of the nudged stage (``base`` is not trained; ``grpo`` is
stage 1 of every two-stage arm)."""
DEFAULT_ARMS = ("base", "grpo", "nurl", "always")
ARM_LABELS = {"base": "base", "grpo": "GRPO", "nurl": "GRPO -> NuRL (teacher hints)",
              "always": "GRPO -> hints always", "nurl_self": "GRPO -> NuRL (self hints)"}


@dataclass
class LMNuRLConfig(ListFieldsDict):
    """Sizes and settings of one run of the experiment; ``fast()`` is the CI variant."""

    LIST_FIELDS = ("arms", "learnable_tiers", "hard_tiers")

    train_counts: dict = field(default_factory=lambda: {"sum": 24, "product": 24, "chain": 32})
    heldout_counts: dict = field(default_factory=lambda: {"sum": 12, "product": 12, "chain": 24})
    learnable_tiers: tuple = ("sum", "product")
    hard_tiers: tuple = ("chain",)
    preset: str = "cpu"  # the TrainConfig preset the arms start from
    problem_seed: int = 0  # draws the training and held-out problems, the same for every seed
    steps: int = 30
    switch_max_step: int = 15
    plateau_patience: int = 5
    plateau_window: int = 3
    group_size: int = 8
    prompts_per_step: int = 8
    lr: float = 3e-4
    max_new_tokens: int = 12  # the longest answer line of these tiers, '3 + 6 + 8 = 17', is 11
    temperature: float = 1.0
    eval_samples: int = 64
    learnable_samples: int = 8
    hint_lift_problems: int = 24  # 0: no hint-lift table
    hint_lift_samples: int = 8
    arms: tuple = DEFAULT_ARMS
    # switches that change sampled tokens ("" / None: the policy's defaults, resolved by
    # TrainConfig; the committed confirmatory run was drawn with cdf, no lean loop, no packing)
    sampler: str = ""
    fast_decode: bool | None = None
    pack_weights: bool | None = None

    def __post_init__(self):
        self.arms, self.learnable_tiers = tuple(self.arms), tuple(self.learnable_tiers)
        self.hard_tiers = tuple(self.hard_tiers)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"LMNuRLConfig.arms has unknown arm(s) {unknown}; expected some "
                             f"of {list(ARMS)}")
        for name in ("base", "grpo", "nurl"):
            if name not in self.arms:
                raise ValueError(f"LMNuRLConfig.arms must include {name!r}; got "
                                 f"{list(self.arms)}")
        check_fields(self, positive_int=(
            "steps", "switch_max_step", "plateau_patience", "plateau_window", "group_size",
            "prompts_per_step", "max_new_tokens", "eval_samples", "learnable_samples",
            "hint_lift_samples"), choices={"sampler": ("", *SAMPLERS),
                                           "fast_decode": (None, True, False),
                                           "pack_weights": (None, True, False)})
        if self.switch_max_step >= self.steps:
            raise ValueError(f"LMNuRLConfig.switch_max_step={self.switch_max_step} must be < "
                             f"steps={self.steps}, or stage 2 may never run")
        for name in ("train_counts", "heldout_counts"):
            d = getattr(self, name)
            if not isinstance(d, dict) or not all(k in TIERS and isinstance(v, int) and v >= 0
                                                  for k, v in d.items()):
                raise ValueError(f"LMNuRLConfig.{name}={d!r}; expected {{tier: count >= 0}} "
                                 f"over the tiers {list(TIERS)}")
        for t in (*self.learnable_tiers, *self.hard_tiers):
            if self.heldout_counts.get(t, 0) < 2:
                raise ValueError(f"LMNuRLConfig.heldout_counts[{t!r}] must be >= 2 (tier {t!r} "
                                 f"is evaluated)")

    @classmethod
    def fast(cls, **changes) -> LMNuRLConfig:
        """The CI variant: a few steps, samples and problems; the same arms and pipeline."""
        base = {"train_counts": {"sum": 8, "product": 8, "chain": 8},
                "heldout_counts": {"sum": 4, "product": 4, "chain": 6}, "steps": 5,
                "switch_max_step": 3, "eval_samples": 16, "learnable_samples": 4,
                "hint_lift_problems": 3, "hint_lift_samples": 4}
        return cls(**{**base, **changes})



# ----------------------------------------------------------------------------- one seed

def train_config(cfg: LMNuRLConfig, seed: int):
    """The TrainConfig every arm of a seed shares (stage 1 and the GRPO arm)."""

    return get_train_config(
        cfg.preset, seed=seed, difficulty_counts=dict(cfg.train_counts),
        n_train_problems=sum(cfg.train_counts.values()), group_size=cfg.group_size,
        prompts_per_step=cfg.prompts_per_step, lr=cfg.lr, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, plateau_patience=cfg.plateau_patience,
        plateau_window=cfg.plateau_window, drop_solved_samples=cfg.group_size,
        sampler=cfg.sampler, fast_decode=cfg.fast_decode, pack_weights=cfg.pack_weights)


def train_problems(cfg: LMNuRLConfig) -> list:
    """The training problems, drawn once by ``problem_seed`` (seeds vary the LoRA
    initialisation and every sample, not the problems)."""

    return arithmetic_problems(dict(cfg.train_counts), split="train", seed=cfg.problem_seed)


def heldout_problems(cfg: LMNuRLConfig) -> dict:
    """``{tier: problems}`` of the held-out split, drawn once by ``problem_seed``."""

    return {t: arithmetic_problems({t: n}, split="heldout", seed=cfg.problem_seed)
            for t, n in cfg.heldout_counts.items() if n}


def train_arms(cfg: LMNuRLConfig, seed: int, root: Path, *, progress: bool = False) -> dict:
    """Train the arms of one seed under ``root`` (resumable): ``{arm: Trainer}`` and the step
    at which the two-stage arms left GRPO."""

    base = train_config(cfg, seed)
    problems = train_problems(cfg)
    grpo_cfg, _ = stage_configs(base)
    grpo = resume_or_start(grpo_cfg, root / "grpo", problems=problems, progress=progress)
    grpo.train(until_step=cfg.steps)
    switch = find_plateau(grpo.rows, "reward_mean", patience=cfg.plateau_patience,
                          window=cfg.plateau_window, max_step=cfg.switch_max_step)
    trainers = {"grpo": grpo}
    for arm in cfg.arms:
        if arm in ("base", "grpo"):
            continue
        _, arm_cfg = stage_configs(base, **ARMS[arm])
        tr = resume_or_fork(arm_cfg, root / arm, grpo.checkpoint_dir(switch), problems=problems,
                            progress=progress)
        tr.train(until_step=cfg.steps)
        trainers[arm] = tr
    return {"trainers": trainers, "switch_step": switch}


def evaluate_policy(cfg: LMNuRLConfig, policy, train, heldout: dict, scorer, seed: int,
                    ks: list[int]) -> dict:
    """Hint-free pass counts and pass@k per held-out tier, and the learnable share."""

    gen = torch.Generator().manual_seed(10_007 * (seed + 1))
    out = {"counts": {}, "pass_at_k": {}}
    for tier, probs in heldout.items():
        c = evaluate_pass_counts(policy, probs, scorer, n_samples=cfg.eval_samples,
                                 temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                 generator=gen, prompts_per_call=max(1, 512 // cfg.eval_samples))
        out["counts"][tier] = c
        curve = pass_at_k_curve([(cfg.eval_samples, x) for x in c], ks)
        out["pass_at_k"][tier] = [curve[k] for k in ks]
    c = evaluate_pass_counts(policy, train, scorer, n_samples=cfg.learnable_samples,
                             temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                             generator=gen, prompts_per_call=max(1, 512 // cfg.learnable_samples))
    out["learnable"] = [int(x > 0) for x in c]
    out["learnable_ratio"] = float(np.mean(out["learnable"]))
    return out


CURVE_COLUMNS = ("step", "stage", "reward_mean", "pass_rate", "frac_zero_std", "frac_nudged",
                 "hinted_successes", "hint_reliance", "format_number", "format_one_step",
                 "format_several_steps",
                 "hinted_pass_rate", "learnable_ratio", "n_problems", "t_sample", "t_train")


def _curve(trainer) -> dict:
    rows = trainer.rows
    return {c: [r.get(c) for r in rows] for c in CURVE_COLUMNS if any(c in r for r in rows)}


def hint_lift_table(cfg: LMNuRLConfig, seed: int, policy, scorer, *, progress=False) -> dict:
    """none / self (abstract, two calls) / teacher (partial steps) / answer hints on the base
    model's 0/G hard-tier training problems: pass@1, pass@n and problems solved."""

    tcfg = train_config(cfg, seed)
    pool = [p for p in train_problems(cfg) if p.subject in cfg.hard_tiers]
    sampling = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                "generator": torch.Generator().manual_seed(31 + seed)}
    zero, _ = zero_pass_problems(policy, pool, scorer, n_samples=cfg.hint_lift_samples,
                                 limit=cfg.hint_lift_problems, **sampling)
    t0 = time.time()
    self_bank = generate_hints(policy, zero, "abstract", source="self",
                               max_explanation_tokens=tcfg.hint_explanation_tokens,
                               max_hint_tokens=tcfg.hint_tokens,
                               generator=torch.Generator().manual_seed(seed + 17))
    t_self = time.time() - t0
    banks = {"self (abstract)": self_bank,
             "teacher (partial steps)": reference_hints(zero, "partial_steps"),
             "answer": reference_hints(zero, "answer")}
    kinds = {"self (abstract)": "abstract", "teacher (partial steps)": "partial_steps",
             "answer": "answer"}
    # the screen's row is 0 by construction: measured again with fresh samples
    c = evaluate_pass_counts(policy, zero, scorer, n_samples=cfg.hint_lift_samples, **sampling)
    p1, pn = per_problem_pass_at_k([(cfg.hint_lift_samples, x) for x in c],
                                   [1, cfg.hint_lift_samples]).T
    rows = [{"hints": "none", "problems": len(zero), "pass@1": float(p1.mean()),
             "pass@n": float(pn.mean()), "solved": int(sum(x > 0 for x in c))}]
    df = hint_lift(policy, zero, banks, scorer, hint_type=kinds,
                   n_samples=cfg.hint_lift_samples, **sampling)
    for r in df.to_dict("records"):
        bank, kind, got = banks[r["hints"]], kinds[r["hints"]], r["problems"] > 0
        rows.append({"hints": r["hints"], "problems": int(r["problems"]),
                     "pass@1": float(r["pass@1"]) if got else 0.0,
                     "pass@n": float(r[f"pass@{cfg.hint_lift_samples}"]) if got else 0.0,
                     "solved": int(r["solved"]) if got else 0,
                     "examples": [bank.lookup(p.id, kind) for p in zero[:3]]})
    return {"seed": seed, "n": cfg.hint_lift_samples, "screened": len(pool),
            "zero_pass": len(zero), "rows": rows,
            "self_hint_stats": {k: v for k, v in self_bank.stats.items()
                                if isinstance(v, (int, float, str))},
            "self_hint_seconds": round(t_self, 1)}


def evaluate_base(cfg: LMNuRLConfig, seed: int, *, hint_lift: bool = True) -> dict:
    """The base model's evaluation (once: it is the same model for every seed, on the same
    problems) and, with ``hint_lift``, the hint-lift table."""

    t0 = time.time()
    tcfg = train_config(cfg, seed)
    scorer, policy = build_scorer(tcfg), build_policy(tcfg)
    ev = evaluate_policy(cfg, policy, train_problems(cfg), heldout_problems(cfg), scorer, seed,
                         power_of_two_ks(cfg.eval_samples))
    ev["sampling"] = policy.sampling_info()
    if hint_lift and cfg.hint_lift_problems:
        ev["hint_lift"] = hint_lift_table(cfg, seed, policy, scorer)
    ev["seconds"] = round(time.time() - t0, 1)
    return ev


def run_seed(cfg: LMNuRLConfig, seed: int, work: Path, base: dict | None = None, *,
             progress: bool = False) -> dict:
    """Every trained arm of one seed: training, then hint-free evaluation of each; ``base``
    (:func:`evaluate_base`) is copied in so that every seed's result holds every arm."""

    t0 = time.time()
    ks = power_of_two_ks(cfg.eval_samples)
    tcfg = train_config(cfg, seed)
    scorer = build_scorer(tcfg)
    heldout = heldout_problems(cfg)
    trained = train_arms(cfg, seed, work / f"seed-{seed}", progress=progress)
    train = trained["trainers"]["grpo"].problems
    t_train = time.time() - t0
    res = {"seed": seed, "k": ks, "n_samples": cfg.eval_samples,
           "switch_step": trained["switch_step"], "pass_at_k": {}, "counts": {},
           "learnable": {}, "learnable_ratio": {}, "curves": {},
           "heldout_ids": {t: [p.id for p in ps] for t, ps in heldout.items()}}
    for arm in cfg.arms:
        if arm == "base":
            if base is None:
                base = evaluate_base(cfg, seed, hint_lift=False)
            ev = base
        else:
            tr = trained["trainers"][arm]
            res["curves"][arm] = _curve(tr)
            ev = evaluate_policy(cfg, tr.policy, train, heldout, scorer, seed, ks)
        res["pass_at_k"][arm], res["counts"][arm] = ev["pass_at_k"], ev["counts"]
        res["learnable"][arm], res["learnable_ratio"][arm] = ev["learnable"], ev["learnable_ratio"]
    res["sampling"] = trained["trainers"]["grpo"].policy.sampling_info()
    res["seconds"] = {"train": round(t_train, 1), "total": round(time.time() - t0, 1)}
    return res


# ----------------------------------------------------------------------------- metrics, claims

def _pooled(res: dict, arm: str, tiers: Sequence[str], at) -> tuple[float, list[float]]:
    """Mean over the problems of ``tiers`` of per-problem pass@k (k = 1 or the largest)."""
    n = res["n_samples"]
    k = res["k"][-1] if at == "max" else int(at)
    vals = []
    for t in tiers:
        vals += per_problem_pass_at_k([(n, c) for c in res["counts"][arm][t]], [k])[:, 0].tolist()
    return float(np.mean(vals)), vals


def metric_values(res: dict, arm: str, metric: str, cfg: dict) -> list[float]:
    """Per-problem values of one metric for one seed's result (their mean is the metric):
    ``learnable@1``, ``hard@1``, ``hard@max``, ``heldout@1`` (every evaluated tier) and
    ``learnable_share`` (training problems with a hint-free success)."""
    if metric == "learnable_share":
        return [float(x) for x in res["learnable"][arm]]
    split, at = metric.split("@")
    tiers = {"learnable": cfg["learnable_tiers"], "hard": cfg["hard_tiers"],
             "heldout": list(res["counts"][arm])}[split]
    return _pooled(res, arm, tiers, at)[1]


def metric(res: dict, arm: str, name: str, cfg: dict) -> float:
    return float(np.mean(metric_values(res, arm, name, cfg)))


CLAIMS = [
    # (id, claim, the paper's evidence, arm a, arm b, metric, expected relation a ? b)
    ("grpo_learns", "GRPO raises the hint-free pass@1 of the learnable tiers above the base "
     "model (the real model learned)", "GRPO > base on every benchmark", "grpo", "base",
     "learnable@1", ">"),
    ("nurl_upper_bound", "NuRL raises the upper bound (pass@k at the largest k) of the hard "
     "tier above GRPO", "pass@1024 GPQA 63.6 -> 69.7, Date 86.4 -> 94.0", "nurl", "grpo",
     "hard@max", ">"),
    ("nurl_pass1_hard", "NuRL's hard-tier pass@1 beats GRPO's", "avg +0.8 to +1.8 pass@1",
     "nurl", "grpo", "hard@1", ">"),
    ("pass1", "NuRL's pass@1 over all held-out tiers beats GRPO's",
     "avg +1.6 (Llama-3B), +1.8 (OctoThinker), +0.8 (Qwen3-4B)", "nurl", "grpo", "heldout@1",
     ">"),
    ("upper_bound_grpo", "GRPO does not raise the hard tier's upper bound above the base model",
     "pass@1024 GRPO = base (GPQA 63.6, Date 86.4)", "grpo", "base", "hard@max", "<="),
    ("learnable_nurl", "NuRL raises the share of learnable training problems above GRPO",
     "66 % -> 70 %", "nurl", "grpo", "learnable_share", ">"),
    ("trigger", "The 0/G trigger matters: NuRL beats hints-always on the hard tier's pass@1",
     "MATH500 58.04 vs 53.09", "nurl", "always", "hard@1", ">"),
    ("nurl_self", "NuRL with the model's own hints beats GRPO on the hard tier's pass@k",
     "self-generated abstract hints are NuRL's default", "nurl_self", "grpo", "hard@max", ">"),
]
"""The claims, their metric and the relation expected, fixed before the confirmatory run; each is
judged by :func:`nudgelib.core.stats.judge` with its margin of :data:`MARGINS`: reproduced if the
95 % interval of the paired difference a - b is on the claimed side of 0, not reproduced if it
rules out an effect as large as the margin, inconclusive otherwise, with the minimum detectable
effect (80 % power) beside it."""

MARGINS = {
    "grpo_learns": (0.02, "no single number in the paper: 2 points"),
    "nurl_upper_bound": (0.06, "the paper's smallest pass@1024 gain, GPQA +6.1 points"),
    "nurl_pass1_hard": (0.008, "the paper's smallest pass@1 gain, +0.8 points"),
    "pass1": (0.008, "the paper's smallest pass@1 gain, +0.8 points (Qwen3-4B)"),
    "upper_bound_grpo": (0.02, "a rise of 2 points still counts as 'does not raise'"),
    "learnable_nurl": (0.04, "the paper's +4 points (66 % -> 70 %)"),
    "trigger": (0.05, "the paper's +4.95 points (58.04 vs 53.09)"),
    "nurl_self": (0.06, "as nurl_upper_bound: the paper's smallest pass@1024 gain"),
}
"""Claim id -> (margin, where it comes from): the smallest effect that would count. Fixed when
the verdict rule changed, after the confirmatory run (which was re-judged from its stored
per-seed numbers, not rerun); the paper's effect sizes wherever it reports one."""


def claims(per_seed: Sequence[dict], cfg: dict) -> list[dict]:
    """Each claim whose arms were run, with its paired difference, interval and verdict: a
    t-interval over seeds (>= 2 seeds) or over held-out problems (one seed)."""
    arms = set(per_seed[0]["counts"])
    rows = []
    for cid, text, paper, a, b, name, rel in CLAIMS:
        if a not in arms or b not in arms:
            continue
        va = [metric(r, a, name, cfg) for r in per_seed]
        vb = [metric(r, b, name, cfg) for r in per_seed]
        if len(per_seed) >= 2:
            diffs, interval = [x - y for x, y in zip(va, vb)], "t over seeds"
        else:
            r = per_seed[0]
            diffs = [x - y for x, y in zip(metric_values(r, a, name, cfg),
                                           metric_values(r, b, name, cfg))]
            interval = "t over problems (one seed)"
        margin, why = MARGINS[cid]
        rows.append({"id": cid, "claim": text, "paper": paper, "metric": name, "a": a, "b": b,
                     "relation": rel, "a_mean": float(np.mean(va)), "b_mean": float(np.mean(vb)),
                     **judge(rel, diffs, margin), "margin_source": why, "interval": interval,
                     "per_seed_diff": [x - y for x, y in zip(va, vb)]})
    return rows


SUMMARY_METRICS = ("learnable@1", "hard@1", "hard@max", "heldout@1", "learnable_share")


def aggregate(per_seed: Sequence[dict], cfg: LMNuRLConfig) -> dict:
    """One layout for one seed or many: per-arm means (with 95 % t-intervals over seeds when
    there are >= 2), per-tier pass@k curves, the claims, and every seed's result."""
    d = cfg.to_dict()
    seeds = [r["seed"] for r in per_seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds {seeds}")
    first = per_seed[0]
    arms = list(first["counts"])
    out = {"experiment": "lm_nurl", "seeds": seeds, "k": first["k"], "config": d,
           "arm_labels": {a: ARM_LABELS[a] for a in arms}, "metrics": {}, "ci95": {},
           "pass_at_k": {}, "pass_at_k_ci95": {}}
    many = len(per_seed) >= 2
    for arm in arms:
        out["metrics"][arm], out["ci95"][arm] = {}, {}
        for name in SUMMARY_METRICS:
            vals = [metric(r, arm, name, d) for r in per_seed]
            if many:
                m, lo, hi = mean_ci(vals)
                out["ci95"][arm][name] = [lo, hi]
            else:
                m = vals[0]
            out["metrics"][arm][name] = m
    for tier in first["pass_at_k"][arms[0]]:
        out["pass_at_k"][tier], out["pass_at_k_ci95"][tier] = {}, {}
        for arm in arms:
            cols = np.array([r["pass_at_k"][arm][tier] for r in per_seed])
            out["pass_at_k"][tier][arm] = cols.mean(0).tolist()
            if many:
                out["pass_at_k_ci95"][tier][arm] = [list(mean_ci(cols[:, j])[1:])
                                                    for j in range(cols.shape[1])]
    out["switch_step"] = [r["switch_step"] for r in per_seed]
    out["sampling"] = same_sampling([r["sampling"] for r in per_seed])
    out["claims"] = claims(per_seed, d)
    out["seconds"] = {"per_seed": [r["seconds"] for r in per_seed]}
    out["per_seed"] = list(per_seed)
    return out


def same_sampling(blocks: Sequence[dict]) -> dict:
    """The one sampling block of several runs (they must agree: results drawn differently are
    not pooled)."""
    if any(b != blocks[0] for b in blocks[1:]):
        raise ValueError(f"the runs were sampled with different switches: {blocks}")
    return dict(blocks[0])


def run(cfg: LMNuRLConfig, seeds: Sequence[int], *, work: Path | None = None,
        progress: bool = False) -> dict:
    """The base model once (with the hint-lift table), then every seed, aggregated. Run folders go
    under ``work`` (kept, and resumed by a second call) or a temporary folder (deleted)."""
    tmp = None
    if work is None:
        tmp = Path(tempfile.mkdtemp(prefix="lm_nurl-"))
    try:
        base = evaluate_base(cfg, seeds[0]) if "base" in cfg.arms else None
        per_seed = [run_seed(cfg, s, work or tmp, base, progress=progress) for s in seeds]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out = aggregate(per_seed, cfg)
    if base is not None:
        same_sampling([out["sampling"], base["sampling"]])
        out["base_seconds"] = base["seconds"]
        if "hint_lift" in base:
            out["hint_lift"] = base["hint_lift"]
    return out


RESULTS_NAME = "lm_nurl_v2.json"


def load_committed(name: str = RESULTS_NAME) -> dict | None:
    """The committed results of this (superseded) design, ``data/results/lm_nurl_v2.json``,
    or None without a checkout."""
    return load_results(name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.lm_nurl",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="the CI sizes (LMNuRLConfig.fast)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="one seed (default 0)")
    g.add_argument("--seeds", type=int, nargs="+", help="several seeds, with intervals")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), help="arms besides base/grpo/nurl")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--work", help="folder for the run folders (kept and resumed; default: a "
                                   "temporary folder, deleted)")
    ap.add_argument("--figures", help="folder for the HTML figures")
    ap.add_argument("--sampler", choices=SAMPLERS,
                    help="token sampler (default race; the committed run used cdf)")
    ap.add_argument("--fast-decode", choices=("on", "off"),
                    help="the lean CPU decode loop (default on; the committed run: off)")
    ap.add_argument("--pack-weights", choices=("on", "off"),
                    help="oneDNN-packed frozen weights (default on; the committed run: off)")
    ap.add_argument("--base-only", action="store_true",
                    help="evaluate the base model only (with the hint-lift table), no training: "
                         "checks the base-model numbers of a results file")
    args = ap.parse_args(argv)
    over = {}
    if args.arms:
        over["arms"] = tuple(dict.fromkeys(["base", "grpo", "nurl", *args.arms]))
    if args.sampler:
        over["sampler"] = args.sampler
    for name in ("fast_decode", "pack_weights"):
        if getattr(args, name):
            over[name] = getattr(args, name) == "on"
    cfg = LMNuRLConfig.fast(**over) if args.fast else LMNuRLConfig(**over)
    seeds = args.seeds or [args.seed if args.seed is not None else 0]
    t0 = time.time()
    if args.base_only:
        res = {"experiment": "lm_nurl (base model only)", "seeds": seeds[:1],
               "config": cfg.to_dict(), **evaluate_base(cfg, seeds[0])}
        res["wall_seconds"] = round(time.time() - t0, 1)
        out = save_results(res, args.out)
        print(f"wrote {out} ({res['wall_seconds']} s); sampling {res['sampling']}")
        print(report.hint_lift_markdown(res))
        return 0
    res = run(cfg, seeds, work=Path(args.work) if args.work else None)
    res["wall_seconds"] = round(time.time() - t0, 1)
    out = save_results(res, args.out)
    print(f"wrote {out} ({res['wall_seconds']} s)")
    print(report.results_table(res))
    print(report.claims_table(res))
    print(report.hint_lift_markdown(res))
    if args.figures:
        fdir = Path(args.figures)
        fdir.mkdir(parents=True, exist_ok=True)
        for tier in res["pass_at_k"]:
            report.pass_at_k_figure(res, tier).write_html(fdir / f"{out.stem}_{tier}_pass_at_k.html",
                                                   include_plotlyjs="cdn")
        report.training_figure(res).write_html(fdir / f"{out.stem}_training.html",
                                        include_plotlyjs="cdn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
