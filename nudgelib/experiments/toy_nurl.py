"""The paper's central claims on the table toy, with seeds and confidence intervals.

    python -m nudgelib.experiments.toy_nurl [--fast] --seed S --out FILE.json
    python -m nudgelib.experiments.toy_nurl --seeds 500 501 502 --out explore.json  # exploration
    python -m nudgelib.experiments.toy_nurl --confirmatory --out data/results/toy_nurl.json

Protocol (docs/method.md §7): the design -- :data:`ARMS`, :class:`ToyNuRLConfig`'s defaults,
:data:`CLAIMS` with the verdict rule of :func:`nudgelib.core.stats.verdict` and the margins of
:data:`MARGINS`, and :data:`CONFIRMATORY_SEEDS` -- is
committed before the confirmatory run; the committed results and the table of docs/results.md come from
those seeds only. Any other seeds are exploration and their results say so (``protocol``).

Hints are learned, not hand-set (:class:`nudgelib.toy.ToyPolicy`): a hint is a set of input
tokens whose effect on the answer is a learned table, pre-trained to read hints on other
problems. ``answer`` hints give the answer (copyable); ``abstract`` (the answer's family of
two), ``partial_steps`` and ``explanation`` (5 or 3 wrong answers ruled out) carry no number
of the answer (the leak check passes on every problem) and still raise the hinted pass rate.

For each seed: one toy task (:class:`nudgelib.toy.ToyTask`, ``skills="split"`` by default:
hard problems need feature dimensions no easy problem uses), split into training problems and
held-out problems; one base policy; then every arm of :data:`ARMS` trained from that same base
with the library's :class:`nudgelib.training.trainer.Trainer` for the same number of RL steps:

==================  ==========================================================================
arm                 what it is (docs/method.md §2.2–2.6)
==================  ==========================================================================
base                no training
grpo                plain GRPO for all steps
nurl                two stages: GRPO until the training reward plateaus, drop problems solved
                    8/8, then NuRL (0/G trigger, abstract hints) for the remaining steps
always              trigger off: the same two stages, but stage 2 hints every prompt
nurl_scratch        NuRL from the first step (no GRPO stage)
always_scratch      hints on every prompt from the first step
nurl_partial, ...   NuRL with partial-step, explanation or answer hints instead of abstract
==================  ==========================================================================

Evaluation is always WITHOUT hints: pass@k for k = 1, 2, 4, ..., n from n samples per held-out
problem (the unbiased estimator of :mod:`nudgelib.core.stats`), on the held-out hard and easy
problems, plus the exact pass@k ``1 - (1 - p)^k`` read off the policy's table as a check of the
sampling; the learnable ratio (share of the training problems with at least one success in
``learnable_samples`` hint-free samples). Across seeds: the mean and a 95 % t-interval, and the
paired difference between arms for each claim (:func:`claims`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nudgelib.core.checks import ListFieldsDict, check_fields
from nudgelib.core.stats import judge, mean_ci, pass_at_k_curve, power_of_two_ks
from nudgelib.rollouts import evaluate_pass_counts
from nudgelib.tasks.rewards import ExactMatchScorer
from nudgelib.toy import CategoricalPolicy, ToyPolicy, ToyTask, toy_problems
from nudgelib.training.config import get_train_config
from nudgelib.training.runs import write_atomic
from nudgelib.training.trainer import Trainer
from nudgelib.ui.plots import pass_at_k_curves
from nudgelib.ui.progress import progress_bar

ARMS: dict[str, dict] = {
    "base": {},
    "grpo": {"nudging": "none"},
    "nurl": {"nudging": "nurl", "stage1": "plateau"},
    "always": {"nudging": "always", "stage1": "plateau"},
    "nurl_scratch": {"nudging": "nurl"},
    "always_scratch": {"nudging": "always"},
    "nurl_partial": {"nudging": "nurl", "stage1": "plateau", "hint_type": "partial_steps"},
    "nurl_explanation": {"nudging": "nurl", "stage1": "plateau", "hint_type": "explanation"},
    "nurl_answer": {"nudging": "nurl", "stage1": "plateau", "hint_type": "answer"},
}
"""Arm name -> TrainConfig overrides (``base`` is not trained)."""

CONFIRMATORY_SEEDS = tuple(range(1000, 1010))
"""The confirmatory seeds, fixed with the design (issue 20) before their run. Exploration used
other seeds (500-502, ``--fast``)."""

DESIGNS = {"split": {},
           "original": {"skills": "shared", "hard_spread": 0.0, "train_table": True}}
"""``--design``: ToyNuRLConfig overrides. ``original`` is the toy of notebooks 02-04 (shared
features, every hard problem at -5, a trainable per-problem table)."""

ARM_LABELS = {
    "base": "base", "grpo": "GRPO", "nurl": "NuRL (GRPO -> NuRL, abstract hints)",
    "always": "hints always (two-stage)", "nurl_scratch": "NuRL from scratch",
    "always_scratch": "hints always from scratch", "nurl_partial": "NuRL, partial-step hints",
    "nurl_explanation": "NuRL, explanation hints", "nurl_answer": "NuRL, answer hints",
}


@dataclass
class ToyNuRLConfig(ListFieldsDict):
    """Sizes of one run of the experiment. ``fast()`` is the CI variant."""

    train_counts: dict = field(default_factory=lambda: {"easy": 16, "medium": 16, "hard": 32})
    heldout_counts: dict = field(default_factory=lambda: {"easy": 32, "hard": 64})
    skills: str = "split"  # ToyTask.make: hard problems need their own feature dimensions
    hard_spread: float = 3.0  # hard problems' initial correct logit in -5 +- 3
    train_table: bool = False  # False: only the shared map W learns (skills, no memorising)
    n_answers: int = 10
    dim: int = 8
    steps: int = 150  # RL steps of every trained arm
    stage1_max_steps: int = 75  # the plateau detector's upper bound on stage 1
    plateau_patience: int = 10
    plateau_window: int = 5
    group_size: int = 8
    prompts_per_step: int = 24
    lr: float = 0.1
    eval_samples: int = 1024  # n per held-out problem; pass@k for k up to n
    learnable_samples: int = 64
    arms: tuple = tuple(ARMS)

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"ToyNuRLConfig.arms has unknown arm(s) {unknown}; expected some "
                             f"of {list(ARMS)}")
        for name in ("base", "grpo", "nurl"):
            if name not in self.arms:
                raise ValueError(f"ToyNuRLConfig.arms must include {name!r} (the main "
                                 f"comparison); got {list(self.arms)}")
        check_fields(self, positive_int=("n_answers", "dim", "steps", "stage1_max_steps",
                                         "plateau_patience", "plateau_window", "group_size",
                                         "prompts_per_step", "eval_samples", "learnable_samples"))
        if self.stage1_max_steps >= self.steps:
            raise ValueError(f"ToyNuRLConfig.stage1_max_steps={self.stage1_max_steps} must be "
                             f"< steps={self.steps}, or stage 2 may never run")
        for name in ("train_counts", "heldout_counts"):
            d = getattr(self, name)
            if not isinstance(d, dict) or not all(
                    k in ("easy", "medium", "hard") and isinstance(v, int) and v >= 0
                    for k, v in d.items()):
                raise ValueError(f"ToyNuRLConfig.{name}={d!r}; expected a dict "
                                 f"{{'easy'|'medium'|'hard': count >= 0}}")
        for d in ("easy", "hard"):
            if self.heldout_counts.get(d, 0) < 2:
                raise ValueError(f"ToyNuRLConfig.heldout_counts[{d!r}] must be >= 2 "
                                 f"(confidence intervals over problems)")
        self.arms = tuple(self.arms)

    @classmethod
    def fast(cls, **changes) -> ToyNuRLConfig:
        """The CI variant: fewer steps, samples and held-out problems; the same arms and
        training set."""
        base = {"steps": 60, "stage1_max_steps": 25, "eval_samples": 256,
                "learnable_samples": 32, "heldout_counts": {"easy": 16, "hard": 32}}
        return cls(**{**base, **changes})



# ----------------------------------------------------------------------------- one seed

def make_task(cfg: ToyNuRLConfig, seed: int):
    """(task, training problems, held-out problems by difficulty) for one seed."""

    counts = {d: cfg.train_counts.get(d, 0) + cfg.heldout_counts.get(d, 0)
              for d in ("easy", "medium", "hard")}
    task = ToyTask.make({d: n for d, n in counts.items() if n}, n_answers=cfg.n_answers,
                        dim=cfg.dim, seed=seed, skills=cfg.skills, hard_spread=cfg.hard_spread)
    problems = toy_problems(task)
    train, heldout = [], {}
    for d in ("easy", "medium", "hard"):
        mine = [p for p, lab in zip(problems, task.difficulty) if lab == d]
        n_train = cfg.train_counts.get(d, 0)
        train += mine[:n_train]
        if cfg.heldout_counts.get(d, 0):
            heldout[d] = mine[n_train:]
    return task, train, heldout


def _train_config(cfg: ToyNuRLConfig, arm: str, seed: int):
    over = dict(ARMS[arm])
    if over.get("stage1") == "plateau":
        over.update(stage1_steps=cfg.stage1_max_steps, plateau_patience=cfg.plateau_patience,
                    plateau_window=cfg.plateau_window)
    return get_train_config("toy-table", seed=seed, group_size=cfg.group_size,
                            prompts_per_step=cfg.prompts_per_step, lr=cfg.lr, **over)


def _problem_index(problems) -> torch.Tensor:
    return torch.tensor([int(p.question[1:]) for p in problems])


def train_arm(cfg: ToyNuRLConfig, arm: str, seed: int, task, train, *, progress=False):
    """The arm's policy after ``cfg.steps`` RL steps from the seed's base (``base``: none), and
    its per-step metrics with the exact hint-free pass rate of each training difficulty."""

    tcfg = _train_config(cfg, arm, seed)
    policy = CategoricalPolicy(ToyPolicy(task, max_len=tcfg.max_new_tokens,
                                         train_table=cfg.train_table))
    if arm == "base":
        return policy, None, None
    trainer = Trainer(tcfg, policy=policy, problems=train, progress=progress)
    idx = {d: _problem_index([p for p in train if p.level == lv])
           for d, lv in (("easy", 1), ("medium", 2), ("hard", 3))}

    def record(tr, row, batch):
        pr = tr.policy.net.pass_rate()
        for d, ix in idx.items():
            if len(ix):
                row[f"train_{d}_exact"] = float(pr[ix].mean())

    trainer.callbacks.append(record)
    df = trainer.train(until_step=cfg.steps)
    return policy, df, trainer.stage_switch_step


def evaluate_arm(cfg: ToyNuRLConfig, policy, train, heldout, seed: int, ks) -> dict:
    """Hint-free pass@k on the held-out problems (sampled and exact) and the learnable ratio."""
    scorer = ExactMatchScorer()
    gen = torch.Generator().manual_seed(10_007 * (seed + 1))
    pr = policy.net.pass_rate()
    out = {"pass_at_k": {}, "pass_at_k_exact": {}, "per_problem": {}}
    for d, probs in heldout.items():
        counts = evaluate_pass_counts(policy, probs, scorer, n_samples=cfg.eval_samples,
                                      max_new_tokens=policy.net.max_len, generator=gen)
        curve = pass_at_k_curve([(cfg.eval_samples, c) for c in counts], ks)
        out["pass_at_k"][d] = [curve[k] for k in ks]
        p = pr[_problem_index(probs)].double()
        out["pass_at_k_exact"][d] = [float((1 - (1 - p) ** k).mean()) for k in ks]
        out["per_problem"][d] = counts
    counts = evaluate_pass_counts(policy, train, scorer, n_samples=cfg.learnable_samples,
                                  max_new_tokens=policy.net.max_len, generator=gen)
    out["learnable_ratio"] = float(np.mean([c > 0 for c in counts]))
    return out


def run_seed(cfg: ToyNuRLConfig, seed: int, *, progress: bool = False) -> dict:
    """Every arm for one seed. The JSON schema of the CLI's single-seed output."""
    t0 = time.time()
    ks = power_of_two_ks(cfg.eval_samples)
    task, train, heldout = make_task(cfg, seed)
    res = {"seed": seed, "k": ks, "hard": {}, "easy": {}, "hard_exact": {}, "easy_exact": {},
           "learnable_ratio": {}, "stage_switch": {}, "curves": {}, "counts": {}}

    for arm in progress_bar(cfg.arms, desc=f"seed {seed}", disable=not progress):
        policy, df, switch = train_arm(cfg, arm, seed, task, train)
        ev = evaluate_arm(cfg, policy, train, heldout, seed, ks)
        for d in heldout:
            res[d][arm] = ev["pass_at_k"][d]
            res[f"{d}_exact"][arm] = ev["pass_at_k_exact"][d]
        res["counts"][arm] = ev["per_problem"]
        res["learnable_ratio"][arm] = ev["learnable_ratio"]
        res["sampling"] = policy.sampling_info()  # every arm: the toy table's own draw
        if df is not None:
            res["stage_switch"][arm] = switch
            keep = ["step", "stage", "reward_mean", "frac_nudged", "n_problems"] + [
                c for c in df.columns if c.endswith("_exact")]
            res["curves"][arm] = {c: [None if _nan(v) else v for v in df[c].tolist()]
                                  for c in keep if c in df.columns}
    res["config"] = cfg.to_dict()
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ----------------------------------------------------------------------------- across seeds

def aggregate(per_seed: Sequence[dict]) -> dict:
    """Mean over seeds with 95 % t-intervals, in the single-seed schema plus ``ci95``,
    ``seeds`` and ``per_seed``."""
    if len(per_seed) < 2:
        raise ValueError(f"aggregate needs results for >= 2 seeds, got {len(per_seed)}")
    first = per_seed[0]
    for r in per_seed[1:]:
        if r["k"] != first["k"] or r["config"] != first["config"]:
            raise ValueError(f"seed {r['seed']} was run with a different config or k than "
                             f"seed {first['seed']}; aggregate runs of one config only")
    seeds = [r["seed"] for r in per_seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds {seeds}")
    out = {"seeds": seeds, "k": first["k"], "config": first["config"],
           "sampling": first.get("sampling"), "ci95": {}}
    for key in ("hard", "easy", "hard_exact", "easy_exact"):
        out[key], out["ci95"][key] = {}, {}
        for arm in first[key]:
            cols = np.array([r[key][arm] for r in per_seed])  # [seeds, ks]
            stats = [mean_ci(cols[:, j]) for j in range(cols.shape[1])]
            out[key][arm] = [s[0] for s in stats]
            out["ci95"][key][arm] = [[s[1], s[2]] for s in stats]
    out["learnable_ratio"], out["ci95"]["learnable_ratio"] = {}, {}
    for arm in first["learnable_ratio"]:
        m, lo, hi = mean_ci([r["learnable_ratio"][arm] for r in per_seed])
        out["learnable_ratio"][arm], out["ci95"]["learnable_ratio"][arm] = m, [lo, hi]
    out["stage_switch"] = {arm: [r["stage_switch"].get(arm) for r in per_seed]
                           for arm in first["stage_switch"]}
    out["seconds"] = sum(r["seconds"] for r in per_seed)
    out["per_seed"] = list(per_seed)
    out["claims"] = claims(out)
    return out


def _metric(res: dict, arm: str, metric: str) -> float:
    """One number of one seed's result: ``hard@1``, ``hard@max``, ``heldout@1`` (all held-out
    problems, weighted by count), ``learnable``."""
    if metric == "learnable":
        return res["learnable_ratio"][arm]
    if metric == "heldout@1":
        n = {d: len(res["counts"][arm][d]) for d in ("easy", "hard")}
        return (res["easy"][arm][0] * n["easy"] + res["hard"][arm][0] * n["hard"]) / sum(n.values())
    split, at = metric.split("@")
    return res[split][arm][-1 if at == "max" else res["k"].index(int(at))]


CLAIMS = [
    # (id, claim of docs/method.md §2.6, paper's numbers, arm a, arm b, metric, expected relation a ? b)
    ("upper_bound_grpo", "GRPO does not raise the upper bound (pass@k, large k) above the "
     "base model", "pass@1024 GRPO = base (GPQA 63.6, Date 86.4)", "grpo", "base", "hard@max",
     "<="),
    ("upper_bound_nurl", "NuRL raises the upper bound above GRPO",
     "pass@1024 GPQA 63.6 -> 69.7, Date 86.4 -> 94.0", "nurl", "grpo", "hard@max", ">"),
    ("pass1", "NuRL's pass@1 beats GRPO's", "avg +1.6 (Llama-3B), +1.8 (OctoThinker), +0.8 "
     "(Qwen3-4B)", "nurl", "grpo", "heldout@1", ">"),
    ("learnable_grpo", "GRPO leaves the share of learnable training problems unchanged",
     "66 % -> 66 %", "grpo", "base", "learnable", "<="),
    ("learnable_nurl", "NuRL raises the share of learnable training problems above GRPO",
     "66 % -> 70 %", "nurl", "grpo", "learnable", ">"),
    ("trigger", "The 0/G trigger matters: two-stage NuRL beats two-stage hints-always",
     "MATH500 58.04 vs 53.09", "nurl", "always", "hard@1", ">"),
    ("always_vs_none", "Always-on hints are worse than no hints (GRPO)",
     "MATH500 53.09 vs 56.92", "always", "grpo", "hard@1", "<"),
    ("schedule", "GRPO first matters: two-stage NuRL beats NuRL from scratch",
     "MATH500 58.04 vs 56.06", "nurl", "nurl_scratch", "hard@1", ">"),
    ("trigger_scratch", "From scratch, the trigger beats hints always",
     "MATH500 56.06 vs 53.41", "nurl_scratch", "always_scratch", "hard@1", ">"),
    ("answer_hints", "Abstract hints beat answer hints (answers do not transfer)",
     "abstract > partial > explanation > answer", "nurl", "nurl_answer", "hard@1", ">"),
]
"""Each claim is checked on the paired per-seed difference a - b of one metric (held-out,
hint-free), judged by :func:`nudgelib.core.stats.judge` with the claim's margin of
:data:`MARGINS`: reproduced if the 95 % interval is on the claimed side of 0, not reproduced if
it rules out an effect as large as the margin, inconclusive otherwise; each with its minimum
detectable effect (80 % power)."""

MARGINS = {
    "upper_bound_grpo": (0.02, "a rise of 2 points still counts as 'does not raise'"),
    "upper_bound_nurl": (0.06, "the paper's smallest pass@1024 gain, GPQA +6.1 points"),
    "pass1": (0.008, "the paper's smallest pass@1 gain, +0.8 points (Qwen3-4B)"),
    "learnable_grpo": (0.02, "a rise of 2 points still counts as 'unchanged'"),
    "learnable_nurl": (0.04, "the paper's +4 points (66 % -> 70 %)"),
    "trigger": (0.05, "the paper's +4.95 points (58.04 vs 53.09)"),
    "always_vs_none": (0.038, "the paper's -3.83 points (53.09 vs 56.92)"),
    "schedule": (0.02, "the paper's +1.98 points (58.04 vs 56.06)"),
    "trigger_scratch": (0.026, "the paper's +2.65 points (56.06 vs 53.41)"),
    "answer_hints": (0.008, "no gap reported (a ranking): the paper's smallest gain, +0.8 points"),
}
"""Claim id -> (margin, where it comes from): the smallest effect that would count. Fixed when
the verdict rule changed (after the confirmatory runs, which were re-judged from their stored
per-seed numbers, not rerun); the paper's own effect sizes wherever it reports one."""

def claims(agg: dict) -> list[dict]:
    """The claims of :data:`CLAIMS` that the aggregated result has arms for, with verdicts."""
    per_seed = agg["per_seed"]
    arms = set(per_seed[0]["learnable_ratio"])
    rows = []
    for cid, text, paper, a, b, metric, rel in CLAIMS:
        if a not in arms or b not in arms:
            continue
        va = [_metric(r, a, metric) for r in per_seed]
        vb = [_metric(r, b, metric) for r in per_seed]
        margin, why = MARGINS[cid]
        rows.append({"id": cid, "claim": text, "paper": paper, "metric": metric, "a": a,
                     "b": b, "relation": rel, "a_mean": float(np.mean(va)),
                     "b_mean": float(np.mean(vb)),
                     **judge(rel, [x - y for x, y in zip(va, vb)], margin),
                     "margin_source": why})
    order = [a for a in ("nurl", "nurl_partial", "nurl_explanation", "nurl_answer") if a in arms]
    if len(order) == 4:
        means = {a: float(np.mean([_metric(r, a, "hard@1") for r in per_seed])) for a in order}
        got = sorted(order, key=lambda a: -means[a])
        rows.append({"id": "hint_order", "claim": "Hint types rank abstract > partial steps > "
                     "explanation > answer", "paper": "docs/method.md §2.5", "metric": "hard@1",
                     "means": means, "order": got, "mde": None,
                     # a ranking of four means has no interval: exact order or inconclusive
                     "verdict": "reproduced" if got == order else "inconclusive"})
    return rows


HINT_OF_ARM = {"nurl": "abstract", "nurl_partial": "partial steps",
               "nurl_explanation": "explanation", "nurl_answer": "answer"}

METRIC_TEXT = {"hard@max": "held-out hard pass@{kmax}", "hard@1": "held-out hard pass@1",
               "heldout@1": "held-out pass@1 (easy + hard)",
               "learnable": "learnable share of training problems"}


def claims_table(agg: dict) -> str:
    """The claims as a markdown table (what docs/results.md shows)."""
    kmax = agg["k"][-1]
    lines = ["| claim (docs/method.md §2.5–2.6) | paper | metric (no hints) | toy: a vs b "
             "[diff, 95 % CI over seeds] | MDE (80 % power) | margin | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in agg["claims"]:
        metric = METRIC_TEXT[r["metric"]].format(kmax=kmax)
        if r["id"] == "hint_order":
            toy = ", ".join(f"{HINT_OF_ARM[a]} {r['means'][a]:.3f}" for a in r["order"])
            power = margin = "-"
        else:
            lo, hi = r["diff_ci95"]
            toy = (f"{r['a']} {r['a_mean']:.3f} vs {r['b']} {r['b_mean']:.3f} "
                   f"[{r['diff']:+.3f}, {lo:+.3f} .. {hi:+.3f}]")
            power, margin = f"{r['mde']:.3f}", f"{r['margin']:.3f}"
        lines.append(f"| {r['claim']} | {r['paper']} | {metric} | {toy} | {power} | {margin} "
                     f"| **{r['verdict']}** |")
    return "\n".join(lines)


def pass_at_k_figure(agg: dict, split: str = "hard", arms: Sequence[str] = ("base", "grpo",
                                                                              "nurl"),
                     title: str | None = None):
    """Plotly figure: mean hint-free pass@k of some arms with their 95 % bands (when the result
    is aggregated over seeds), k on a log axis (:func:`nudgelib.ui.plots.pass_at_k_curves`)."""

    ci = agg.get("ci95", {}).get(split, {})
    return pass_at_k_curves(agg["k"], {ARM_LABELS[a]: agg[split][a] for a in arms},
                            bands={ARM_LABELS[a]: ci[a] for a in arms if a in ci},
                            title=title or f"held-out {split} problems, no hints: pass@k")


RESULTS_NAME = "toy_nurl.json"


def load_results(name: str = RESULTS_NAME) -> dict | None:
    """The committed full results (``data/results/<name>`` of a source checkout or of the
    Colab clone), or None when this installation has no repository beside it."""
    here = Path.cwd()
    for folder in (here / "data" / "results", here.parent / "data" / "results",
                   Path(__file__).resolve().parents[2] / "data" / "results",
                   Path(os.environ.get("NUDGE_CLONE_DIR", "/content/nudgelib")) / "data" / "results"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return None


def protocol_of(cfg: ToyNuRLConfig, seeds: Sequence[int]) -> str:
    """``confirmatory`` for the committed design on :data:`CONFIRMATORY_SEEDS`, else
    ``exploration``."""
    full = cfg.to_dict() == ToyNuRLConfig().to_dict()
    return "confirmatory" if full and tuple(seeds) == CONFIRMATORY_SEEDS else "exploration"


def run(cfg: ToyNuRLConfig, seeds: Sequence[int], *, progress: bool = False) -> dict:
    """One seed: :func:`run_seed`'s result; several: :func:`aggregate` of them. Either way
    labelled with its ``protocol`` (:func:`protocol_of`)."""
    results = [run_seed(cfg, s, progress=progress) for s in seeds]
    res = results[0] if len(results) == 1 else aggregate(results)
    res["protocol"] = protocol_of(cfg, seeds)
    return res


def _round(x, nd: int = 5):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v, nd) for v in x]
    return x


def save_results(res: dict, path) -> Path:
    """Write a result as compact JSON (5 decimals), atomically (a temporary file beside it,
    fsynced, then renamed: an interrupted write leaves the old file whole); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(_round(res), separators=(",", ":")) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.toy_nurl",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="the CI sizes (ToyNuRLConfig.fast)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="one seed (default 0)")
    g.add_argument("--seeds", type=int, nargs="+", help="several seeds, aggregated with CIs")
    g.add_argument("--confirmatory", action="store_true",
                   help=f"the committed design on the confirmatory seeds {CONFIRMATORY_SEEDS}")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), help="a subset of the arms")
    ap.add_argument("--design", choices=list(DESIGNS), default="split",
                    help="split: the default task (hard problems need their own skill, spread "
                         "difficulty, no per-problem memorising); original: the toy of "
                         "notebooks 02-04 (shared features, every hard problem at -5, "
                         "trainable table)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--figures", help="folder for the HTML figures (aggregated runs)")
    args = ap.parse_args(argv)
    over = dict(DESIGNS[args.design])
    if args.arms:
        over["arms"] = tuple(dict.fromkeys(["base", "grpo", "nurl", *args.arms]))
    if args.confirmatory and (args.fast or args.arms or args.design != "split"):
        ap.error("--confirmatory runs the committed design: no --fast, --arms or --design")
    cfg = ToyNuRLConfig.fast(**over) if args.fast else ToyNuRLConfig(**over)
    seeds = list(CONFIRMATORY_SEEDS) if args.confirmatory else (
        args.seeds or [args.seed if args.seed is not None else 0])
    t0 = time.time()
    res = run(cfg, seeds, progress=True)
    res["wall_seconds"] = round(time.time() - t0, 1)
    out = save_results(res, args.out)
    print(f"wrote {out} ({res['wall_seconds']} s, {res['protocol']})")
    if "claims" in res:
        print(claims_table(res))
        if args.figures:
            fdir = Path(args.figures)
            fdir.mkdir(parents=True, exist_ok=True)
            stem = out.stem
            pass_at_k_figure(res).write_html(fdir / f"{stem}_hard_pass_at_k.html",
                                             include_plotlyjs="cdn")
            ab = [a for a in cfg.arms if a != "base"]
            pass_at_k_figure(res, arms=ab, title="ablations: held-out hard, no hints").write_html(
                fdir / f"{stem}_ablations_pass_at_k.html", include_plotlyjs="cdn")
    else:
        hard = res["hard"]
        print("held-out hard pass@k (k = " + ", ".join(map(str, res["k"])) + ")")
        for arm, v in hard.items():
            print(f"  {arm:17s}" + " ".join(f"{x:.3f}" for x in v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
