"""Tables and figures of a real-model NuRL result (:mod:`nudgelib.experiments.lm_nurl`): the
arms' means, the claims with their verdicts, the hint-lift table, pass@k curves and training
curves. They read the results JSON only, so they work on a committed file as on a fresh run."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from nudgelib.ui.plots import curves, pass_at_k_curves

METRIC_TEXT = {"learnable@1": "held-out pass@1, learnable tiers",
               "hard@1": "held-out pass@1, hard tier", "hard@max": "held-out pass@{kmax}, hard tier",
               "heldout@1": "held-out pass@1, all tiers",
               "learnable_share": "learnable share of training problems"}


def results_table(res: dict) -> str:
    """Per-arm means (95 % intervals over seeds) as a markdown table."""
    kmax = res["k"][-1]
    names = list(next(iter(res["metrics"].values())))
    head = "| arm | " + " | ".join(METRIC_TEXT[n].format(kmax=kmax) for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for arm, ms in res["metrics"].items():
        cells = []
        for n in names:
            ci = res["ci95"].get(arm, {}).get(n)
            cells.append(f"{ms[n]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {res['arm_labels'][arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(res: dict) -> str:
    kmax = res["k"][-1]
    lines = ["| claim | paper | metric (no hints) | a vs b [diff, 95 % CI] | MDE (80 % power) "
             "| margin | verdict |", "|---|---|---|---|---|---|---|"]
    for r in res["claims"]:
        lo, hi = r["diff_ci95"]
        lines.append(f"| {r['claim']} | {r['paper']} | {METRIC_TEXT[r['metric']].format(kmax=kmax)}"
                     f" | {r['a']} {r['a_mean']:.3f} vs {r['b']} {r['b_mean']:.3f} "
                     f"[{r['diff']:+.3f}, {lo:+.3f} .. {hi:+.3f}] | {r['mde']:.3f} "
                     f"| {r['margin']:.3f} | **{r['verdict']}** |")
    return "\n".join(lines)


def hint_lift_markdown(res: dict) -> str:
    hl = res.get("hint_lift")
    if not hl:
        return ""
    n = hl["n"]
    lines = [f"| hints (base model, {hl['zero_pass']} hard training problems at 0/{n}) | "
             f"pass@1 | pass@{n} | solved |", "|---|---|---|---|"]
    for r in hl["rows"]:
        lines.append(f"| {r['hints']} | {r['pass@1']:.3f} | {r['pass@n']:.3f} | "
                     f"{r['solved']} / {r['problems']} |")
    return "\n".join(lines)


def pass_at_k_figure(res: dict, tier: str = "chain", arms: Sequence[str] | None = None):
    """Plotly: mean hint-free pass@k of each arm on one held-out tier, 95 % bands over seeds."""

    arms = arms or list(res["metrics"])
    ci = res.get("pass_at_k_ci95", {}).get(tier, {})
    labels = res["arm_labels"]
    return pass_at_k_curves(res["k"], {labels[a]: res["pass_at_k"][tier][a] for a in arms},
                            bands={labels[a]: ci[a] for a in arms if a in ci},
                            title=f"held-out {tier} problems, no hints: pass@k")


def training_figure(res: dict, column: str = "reward_mean", seed_index: int = 0):
    """Plotly: one seed's training curve of ``column`` for every trained arm."""
    r = res["per_seed"][seed_index]
    frames = {res["arm_labels"][arm]: pd.DataFrame({"step": cur["step"], column: cur[column]})
              for arm, cur in r["curves"].items() if column in cur}
    return curves(frames, column, title=f"seed {r['seed']}: {column} per step (switch at step "
                                        f"{r['switch_step']})")
