"""Tables and figures of the forked real-model comparison (:mod:`nudgelib.experiments.lm_fork`):
every arm's hint-free numbers with intervals over seeds, the claims with their verdicts, the
held-out pass@k curves and the mechanism per stage-2 step. They read the results JSON only, so
they work on the committed file as on a fresh run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nudgelib.core.stats import (
    bootstrap_ci,
    mean_ci,
    pass_at_k_curve,
    per_problem_pass_at_k,
    power_of_two_ks,
)
from nudgelib.ui.plots import curves, pass_at_k_curves

ARM_LABELS = {"fork": "fork (stage-1 GRPO model)", "control": "GRPO control, same pool",
              "nurl_hinted": "NuRL as published (hinted, PPO-clip)",
              "nurl_original": "NuRL under the original prompt (ratio-free)",
              "sft_grpo": "supervised warm start, then GRPO",
              "more_samples": "GRPO with G = 16", "dynamic": "dynamic sampling",
              "prefix": "prefix hints, annealed"}


def _seeds(res: dict) -> list[str]:
    return [str(s) for s in res["config"]["seeds"]]


def per_problem(counts: Sequence[int], n: int, k: int) -> np.ndarray:
    """pass@k of each problem from its count of correct samples out of ``n``."""
    return per_problem_pass_at_k([(n, c) for c in counts], [k])[:, 0]


def _mean_pass(counts: Sequence[int], n: int, k: int) -> float:
    return float(per_problem(counts, n, k).mean()) if counts else float("nan")


def metric_values(res: dict, arm: str, seed: str, metric: str) -> list[float]:
    """Per held-out chain problem: pass@k_primary (``chain@k``) or pass@1 (``chain@1``) from
    eval_samples samples."""
    c = res["config"]
    k = c["k_primary"] if metric == "chain@k" else 1
    return per_problem(res["arms"][arm][seed]["eval"]["chain"], c["eval_samples"], k).tolist()


def crossing(fork_chain: Sequence[int], chain: Sequence[int]) -> float | None:
    """The share of the problems the fork model solves 0/n (``fork_chain``) that ``chain``
    solves at least once (None: the fork model solves every problem at least once)."""
    hard = [i for i, c in enumerate(fork_chain) if c == 0]
    return float(np.mean([chain[i] > 0 for i in hard])) if hard else None


def boundary_crossing(res: dict, arm: str, seed: str) -> float | None:
    """Boundary crossing of one (arm, seed): :func:`crossing` against the fork model."""
    return crossing(res["fork"]["chain"], res["arms"][arm][seed]["eval"]["chain"])


def _eval_row(res: dict, ev: dict) -> dict[str, float]:
    """The hint-free numbers of one evaluation (the fork model's or an arm's): held-out chain
    pass@k_primary and pass@1, boundary crossing, the pool's learnable share (chain problems
    solved at least once in ``learnable_samples``), held-out sum and product pass@1."""
    c = res["config"]
    k, n, nr = c["k_primary"], c["eval_samples"], c["regression_samples"]
    cross = crossing(res["fork"]["chain"], ev["chain"])
    return {f"chain@{k}": _mean_pass(ev["chain"], n, k), "chain@1": _mean_pass(ev["chain"], n, 1),
            "crossing": float("nan") if cross is None else cross,
            "pool_learnable": float(np.mean([x > 0 for x in ev["pool_chain"]]))
            if ev["pool_chain"] else float("nan"),
            "sum@1": _mean_pass(ev.get("sum", []), nr, 1),
            "product@1": _mean_pass(ev.get("product", []), nr, 1)}


def arm_values(res: dict, arm: str) -> dict[str, list[float]]:
    """Per seed: :func:`_eval_row`'s numbers and the stage-2 means of the mechanism columns."""
    out: dict[str, list[float]] = {}
    for s in _seeds(res):
        row = _eval_row(res, res["arms"][arm][s]["eval"])
        cur = res["arms"][arm][s]["curves"]
        for col in ("frac_nudged", "hinted_successes", "hint_reliance"):
            vals = [v for v in cur.get(col, []) if v is not None]
            row[col] = float(np.mean(vals)) if vals else float("nan")
        for key, v in row.items():
            out.setdefault(key, []).append(v)
    return out


def fork_values(res: dict) -> dict[str, float]:
    """:func:`_eval_row` of the fork model (its boundary crossing is 0 by definition)."""
    return _eval_row(res, res["fork"])


def exploratory(res: dict) -> list[dict]:
    """Not pre-registered, computed after the run: per held-out chain problem, each arm's
    pass@k (k_primary, then 1) averaged over the seeds minus the control's, with a 95 %
    bootstrap interval over the problems. The effect for these trained models, not for a new
    training seed (it leaves the seed-to-seed variance out)."""
    c = res["config"]
    rows = []
    for arm in (a for a in res["arms"] if a != "control"):
        for k in (c["k_primary"], 1):
            metric = "chain@k" if k != 1 else "chain@1"

            def seed_mean(a, metric=metric):
                return np.mean([metric_values(res, a, s, metric) for s in _seeds(res)], axis=0)

            diff = seed_mean(arm) - seed_mean("control")
            lo, hi = bootstrap_ci(diff)
            rows.append({"a": arm, "b": "control", "metric": f"chain@{k}",
                         "diff": float(diff.mean()), "ci95_problems": [float(lo), float(hi)]})
    return rows


COLUMNS = {"chain@k": "held-out chain pass@{k} (n = {n})", "chain@1": "held-out chain pass@1",
           "crossing": "boundary crossing", "pool_learnable": "pool chain learnable",
           "sum@1": "held-out sum pass@1", "product@1": "held-out product pass@1",
           "frac_nudged": "nudged groups", "hinted_successes": "hinted successes / step",
           "hint_reliance": "hint reliance (nats/token)"}


def _cell(values: Sequence[float]) -> str:
    v = [x for x in values if not np.isnan(x)]
    if not v:
        return "-"
    if len(v) < 2 or max(v) == min(v):
        return f"{float(np.mean(v)):.3f}"
    m, lo, hi = mean_ci(v)
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def arms_table(res: dict) -> str:
    """Markdown: the fork model, then each arm's means with 95 % t-intervals over seeds."""
    c = res["config"]
    keys = [f"chain@{c['k_primary']}", *[k for k in COLUMNS if k != "chain@k"]]
    names = [COLUMNS["chain@k"].format(k=c["k_primary"], n=c["eval_samples"]),
             *[COLUMNS[k] for k in keys[1:]]]
    lines = ["| arm | " + " | ".join(names) + " |", "|---" * (len(keys) + 1) + "|"]
    fv = fork_values(res)
    lines.append(f"| {ARM_LABELS['fork']} | "
                 + " | ".join(f"{fv[k]:.3f}" if k in fv else "-" for k in keys) + " |")
    for arm in res["arms"]:
        vals = arm_values(res, arm)
        lines.append(f"| {ARM_LABELS.get(arm, arm)} | "
                     + " | ".join(_cell(vals[k]) for k in keys) + " |")
    return "\n".join(lines)


def claims_table(res: dict) -> str:
    """Markdown: each pre-registered claim, its paired difference with the Bonferroni-level
    interval, MDE, margin and verdict."""
    c = res["config"]
    lines = ["| claim | metric (no hints) | a vs b [diff, interval] | level | MDE (80 % power) "
             "| margin | verdict |", "|---|---|---|---|---|---|---|"]
    for r in res["claims"]:
        lo, hi = r["diff_ci95"]
        metric = (f"held-out chain pass@{c['k_primary']} (n = {c['eval_samples']})"
                  if r["metric"] == "chain@k" else "held-out chain pass@1")
        lines.append(f"| {r['claim']} | {metric} | {r['a']} {r['a_mean']:.3f} vs {r['b']} "
                     f"{r['b_mean']:.3f} [{r['diff']:+.3f}, {lo:+.3f} .. {hi:+.3f}] | "
                     f"{r['level']:.3f} | {r['mde']:.3f} | {r['margin']:.3f} | "
                     f"**{r['verdict']}** |")
    return "\n".join(lines)


def pass_at_k_figure(res: dict, tier: str = "chain"):
    """Plotly: hint-free pass@k on a held-out tier, the fork model and every arm (mean over
    seeds, 95 % band)."""
    c = res["config"]
    n = c["eval_samples"] if tier == "chain" else c["regression_samples"]
    ks = power_of_two_ks(n)
    def curve(counts):
        return list(pass_at_k_curve([(n, x) for x in counts], ks).values())

    means = {ARM_LABELS["fork"]: curve(res["fork"][tier])}
    bands = {}
    for arm in res["arms"]:
        per_seed = np.array([curve(res["arms"][arm][s]["eval"][tier]) for s in _seeds(res)])
        label = ARM_LABELS.get(arm, arm)
        means[label] = per_seed.mean(axis=0)
        bands[label] = [mean_ci(per_seed[:, j])[1:] for j in range(len(ks))]
    return pass_at_k_curves(ks, means, bands=bands,
                            title=f"held-out {tier} problems, no hints: pass@k after stage 2")


def mechanism_figure(res: dict, column: str = "hint_reliance"):
    """Plotly: a stage-2 column per update (mean over seeds) for every arm that logs it."""
    frames = {}
    for arm in res["arms"]:
        rows = [res["arms"][arm][s]["curves"].get(column, []) for s in _seeds(res)]
        width = max((len(r) for r in rows), default=0)
        vals = [np.nanmean([r[i] if i < len(r) and r[i] is not None else np.nan for r in rows])
                if any(i < len(r) and r[i] is not None for r in rows) else np.nan
                for i in range(width)]
        if not np.all(np.isnan(vals)):
            frames[ARM_LABELS.get(arm, arm)] = pd.DataFrame({"update": range(1, width + 1),
                                                             column: vals})
    return curves(frames, column, x="update",
                  title=f"stage 2: {column} per update (mean over seeds)")
