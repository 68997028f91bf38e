"""Every way out of the 0/G trap, side by side on one budget of updates, on the table toy.

    python -m nudgelib.experiments.exits --fast --seeds 600 601 --out pilot.json   # exploration
    python -m nudgelib.experiments.exits --confirmatory --out data/results/exits_toy.json
    python -m nudgelib.experiments.exits --followup --out data/results/exits_followup.json

A hard problem that a group of G never solves gives GRPO no gradient. The field's exits, each
an arm here, all trained from the same base for the same number of optimizer updates:

================  ===========================================================================
arm               what it does (docs/method.md §10)
================  ===========================================================================
base              no training
grpo              plain GRPO, G = 8: the control
more_samples      plain GRPO with G x 2 = 16 rollouts per prompt (NudgeRL's baseline: spend
                  more samples, no hints)
dynamic           DAPO's dynamic sampling: a group whose rewards are all equal is drawn again,
                  up to 2 times (every redraw booked)
nurl              NuRL from the first step: a 0/G group keeps one failure, G-1 rows are drawn
                  again with the problem's abstract hint
prefix            prefix hints, QuestA-style: every prompt carries the first half of its worked
                  solution, shrinking linearly to nothing by the middle of training
sft_grpo          supervised warm start: ``sft_updates`` updates on the training problems'
                  reference answers, then GRPO for the rest of the same update budget
================  ===========================================================================

Pre-registered (:data:`CLAIMS`, :data:`MARGINS`, :data:`CONFIRMATORY_SEEDS`, the defaults of
:class:`ExitsConfig`; committed before the confirmatory run): each exit against the control on
held-out hard problems, **without hints**, pass@1 and pass@k (k = n), paired over seeds, with
a Bonferroni interval over all :data:`CLAIMS` (:func:`nudgelib.core.stats.judge`): **gain
shown** when the interval is above 0, **gain ruled out** when it lies below the margin,
**inconclusive** otherwise, each with its minimum detectable effect. Reported beside them, not
judged: boundary crossing (held-out hard problems the base model never solves in n samples
that the arm solves at least once), the learnable share of training problems, the hinted pass
rate of hinted arms and their hint reliance (per token, how much likelier a hinted success is
under its hinted prompt than under the bare question, in nats: added after the confirmatory
run, recomputed from the same seeds), and each arm's compute ledger (tokens and rows sampled
plain / hinted / again, tokens trained, sampling calls, hint writing; hint writing costs no
model call on the toy: its hints are built in).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nudgelib.core.checks import ListFieldsDict, check_fields
from nudgelib.core.stats import judge, mean_ci, power_of_two_ks
from nudgelib.experiments.lm_fork import supervised_steps
from nudgelib.experiments.toy_nurl import ToyNuRLConfig, evaluate_arm, make_task, save_results
from nudgelib.experiments.toy_nurl import load_results as _load_committed
from nudgelib.toy import CategoricalPolicy, ToyPolicy
from nudgelib.training.config import get_train_config
from nudgelib.training.trainer import Trainer
from nudgelib.ui.progress import progress_bar

ARMS: dict[str, dict] = {
    "base": {},
    "grpo": {"nudging": "none"},
    "more_samples": {"nudging": "none", "group_factor": 2},
    "dynamic": {"nudging": "dynamic", "nudging_options": {"max_resamples": 2}},
    "nurl": {"nudging": "nurl", "hint_type": "abstract"},
    "prefix": {"nudging": "prefix"},  # start and anneal from ExitsConfig
    "sft_grpo": {"nudging": "none", "sft": True},
}
"""Arm -> how it trains (``group_factor``, ``sft`` are this harness's; the rest TrainConfig)."""

EXITS = ("more_samples", "dynamic", "nurl", "prefix", "sft_grpo")

ARM_LABELS = {"base": "base", "grpo": "GRPO (control)", "more_samples": "GRPO, 2x samples",
              "dynamic": "dynamic sampling", "nurl": "NuRL", "prefix": "prefix hints, annealed",
              "sft_grpo": "SFT warm start, then GRPO"}

CLAIMS = [(f"{arm}_{metric}", arm, metric) for arm in EXITS for metric in ("hard@1", "hard@max")]
"""(id, arm, metric): the arm beats the control (``grpo``) on the metric; 10 comparisons."""

MARGINS = {"hard@1": (0.02, "two points of held-out hard pass@1: the smallest gain worth an "
                            "exit's extra cost on this toy"),
           "hard@max": (0.06, "the NuRL paper's smallest pass@1024 gain, GPQA +6.1 points")}
"""Metric -> (margin, why): the smallest gain that would count."""

CONFIRMATORY_SEEDS = tuple(range(2000, 2010))
"""Fixed with the design before the confirmatory run; the pilot used 600-601 (``--fast``)."""

FOLLOWUP_SEEDS = tuple(range(3000, 3040))
FOLLOWUP_ARMS = ("base", "grpo", "nurl")
FOLLOWUP_CLAIMS = [("nurl_hard@max", "nurl", "hard@max")]
"""The powered follow-up (``--followup``), fixed before its run and after the ten-comparison
run above, which could not decide anything: **one** primary comparison, NuRL against GRPO at
held-out hard pass@1024, judged at 95 % (no other comparison is judged), the same margin
(0.06), the same design otherwise (:class:`ExitsConfig`'s defaults, arms base, grpo, nurl),
40 new seeds. Sized on the confirmatory run's spread of this difference (sd 0.111 over seeds
2000-2009): the minimum detectable effect at 40 seeds is about 0.049, below the margin, so the
run can show the gain or rule it out; at 30 seeds it would be about 0.059."""


@dataclass
class ExitsConfig(ListFieldsDict):
    """One run of the comparison: the toy task of the NuRL experiment (``toy``), the update
    budget, and each exit's settings. ``fast()`` is the CI variant."""

    toy: dict = field(default_factory=lambda: {})  # ToyNuRLConfig overrides: task and evaluation
    steps: int = 150  # optimizer updates of every trained arm (SFT updates included)
    group_size: int = 8
    prompts_per_step: int = 24
    lr: float = 0.1
    prefix_start: float = 0.5
    prefix_anneal_steps: int = 75
    sft_updates: int = 10
    sft_batch: int = 24
    arms: tuple = tuple(ARMS)

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or "grpo" not in self.arms or "base" not in self.arms:
            raise ValueError(f"ExitsConfig.arms={list(self.arms)}: expected some of {list(ARMS)}, "
                             f"with 'base' and 'grpo' (the control)")
        check_fields(self, positive_int=("steps", "group_size", "prompts_per_step", "sft_batch"),
                     non_negative_int=("prefix_anneal_steps", "sft_updates"))
        if self.sft_updates >= self.steps:
            raise ValueError(f"ExitsConfig.sft_updates={self.sft_updates} must be < steps="
                             f"{self.steps} (GRPO gets the rest of the budget)")
        self.arms = tuple(self.arms)
        self.toy_config()  # its own checks

    def toy_config(self) -> ToyNuRLConfig:
        return ToyNuRLConfig(**{"steps": self.steps, "stage1_max_steps": self.steps - 1,
                                "group_size": self.group_size,
                                "prompts_per_step": self.prompts_per_step, "lr": self.lr,
                                **self.toy})

    @classmethod
    def fast(cls, **changes) -> ExitsConfig:
        """The CI variant: 40 updates, smaller evaluation; the same arms and task."""
        base = {"steps": 40, "prefix_anneal_steps": 20, "sft_updates": 4,
                "toy": {"eval_samples": 128, "learnable_samples": 16,
                        "heldout_counts": {"easy": 8, "hard": 16}}}
        return cls(**{**base, **changes})



# ----------------------------------------------------------------------------- one seed

def _train_config(cfg: ExitsConfig, arm: str, seed: int):
    spec = dict(ARMS[arm])
    factor, _ = spec.pop("group_factor", 1), spec.pop("sft", False)
    if arm == "prefix":
        spec["nudging_options"] = {"start": cfg.prefix_start,
                                   "anneal_steps": cfg.prefix_anneal_steps}
    return get_train_config("toy-table", seed=seed, group_size=cfg.group_size * factor,
                            prompts_per_step=cfg.prompts_per_step, lr=cfg.lr, **spec)


def supervised_warm_start(trainer: Trainer, problems, updates: int, batch: int, seed: int) -> dict:
    """``updates`` optimizer steps on -mean log p(reference answer, end | problem) over random
    batches of ``problems`` (the table toy's worked solution is its answer;
    :func:`nudgelib.experiments.lm_fork.supervised_steps`). Returns the losses and the ledger
    of the warm start (tokens trained; nothing sampled)."""
    policy = trainer.policy
    losses, tokens = supervised_steps(trainer, policy.encode_prompts([p.question for p in problems]),
                                      [[int(p.answer), policy.end_id] for p in problems],
                                      updates, batch, seed)
    return {"losses": losses, "tokens_trained": tokens}


COST_KEYS = ("model_calls", "tokens_plain", "tokens_hinted", "tokens_resampled", "tokens_trained",
             "hint_writing_calls", "tokens_hint_writing")
"""The ledger an arm's results carry (the trainer's ``cost_<key>`` columns summed), with
``tokens_sampled``: every token the model generated (rollouts and hint writing)."""


def train_arm(cfg: ExitsConfig, arm: str, seed: int, task, train):
    """(policy, metrics DataFrame or None, the arm's compute ledger summed over its updates)."""
    tcfg = _train_config(cfg, arm, seed)
    policy = CategoricalPolicy(ToyPolicy(task, max_len=tcfg.max_new_tokens,
                                         train_table=cfg.toy_config().train_table))
    if arm == "base":
        return policy, None, dict.fromkeys((*COST_KEYS, "tokens_sampled", "updates"), 0)
    trainer = Trainer(tcfg, policy=policy, problems=train, progress=False)
    rl_steps, sft = cfg.steps, None
    if ARMS[arm].get("sft"):
        sft = supervised_warm_start(trainer, train, cfg.sft_updates, cfg.sft_batch, seed)
        rl_steps -= cfg.sft_updates
    df = trainer.train(until_step=rl_steps)
    cost = {k: int(df[f"cost_{k}"].sum()) for k in COST_KEYS}
    if sft is not None:
        cost["tokens_trained"] += sft["tokens_trained"]
    cost["tokens_sampled"] = (cost["tokens_plain"] + cost["tokens_hinted"] + cost["tokens_resampled"]
                              + cost["tokens_hint_writing"])
    cost["updates"] = rl_steps + (cfg.sft_updates if sft is not None else 0)
    return policy, df, cost


def run_seed(cfg: ExitsConfig, seed: int, *, progress: bool = False) -> dict:
    """Every arm for one seed, evaluated without hints on the seed's held-out problems."""
    t0 = time.time()
    toy = cfg.toy_config()
    ks = power_of_two_ks(toy.eval_samples)
    task, train, heldout = make_task(toy, seed)
    res = {"seed": seed, "k": ks, "hard": {}, "easy": {}, "learnable_ratio": {}, "counts": {},
           "cost": {}, "hinted_pass_rate": {}, "hint_reliance": {}, "frac_nudged": {}}
    for arm in progress_bar(cfg.arms, desc=f"seed {seed}", disable=not progress):
        policy, df, cost = train_arm(cfg, arm, seed, task, train)
        ev = evaluate_arm(toy, policy, train, heldout, seed, ks)
        for d in heldout:
            res[d][arm] = ev["pass_at_k"][d]
        res["counts"][arm] = ev["per_problem"]
        res["learnable_ratio"][arm] = ev["learnable_ratio"]
        res["cost"][arm] = cost
        if df is not None:
            for col in ("hinted_pass_rate", "hint_reliance"):  # None: the arm gave no hints
                h = df[col].dropna() if col in df else []
                res[col][arm] = float(h.mean()) if len(h) else None
            res["frac_nudged"][arm] = float(df["frac_nudged"].mean())
    res["config"] = cfg.to_dict()
    res["seconds"] = round(time.time() - t0, 1)
    return res


# ----------------------------------------------------------------------------- across seeds

def _metric(res: dict, arm: str, metric: str) -> float:
    split, at = metric.split("@")
    return res[split][arm][-1 if at == "max" else res["k"].index(int(at))]


def crossing(res: dict, arm: str) -> float | None:
    """Of the held-out hard problems the base model solves 0 times in n samples, the share
    this arm solves at least once (None when the base model solves them all)."""
    never = [i for i, c in enumerate(res["counts"]["base"]["hard"]) if c == 0]
    if not never:
        return None
    return float(np.mean([res["counts"][arm]["hard"][i] > 0 for i in never]))


def claims(per_seed: Sequence[dict], design: Sequence[tuple] = CLAIMS) -> list[dict]:
    """The pre-registered comparisons of ``design`` (:data:`CLAIMS`, or
    :data:`FOLLOWUP_CLAIMS`), judged (Bonferroni over all of them)."""
    arms = set(per_seed[0]["hard"])
    rows = []
    for cid, arm, metric in design:
        if arm not in arms:
            continue
        a = [_metric(r, arm, metric) for r in per_seed]
        b = [_metric(r, "grpo", metric) for r in per_seed]
        margin, why = MARGINS[metric]
        j = judge(">", [x - y for x, y in zip(a, b)], margin, comparisons=len(design))
        rows.append({"id": cid, "arm": arm, "metric": metric, "a_mean": float(np.mean(a)),
                     "b_mean": float(np.mean(b)), **j, "margin_source": why,
                     "outcome": OUTCOME[j["verdict"]]})
    return rows


OUTCOME = {"reproduced": "gain shown", "not reproduced": "gain ruled out",
           "inconclusive": "inconclusive"}
""":func:`nudgelib.core.stats.verdict`'s words for a claim 'the exit beats the control'."""


def aggregate(per_seed: Sequence[dict], design: Sequence[tuple] = CLAIMS) -> dict:
    """Means over seeds with 95 % t-intervals, the claims of ``design``, the per-arm ledger."""
    if len(per_seed) < 2:
        raise ValueError(f"aggregate needs >= 2 seeds, got {len(per_seed)}")
    first = per_seed[0]
    if any(r["config"] != first["config"] for r in per_seed):
        raise ValueError("aggregate runs of one config only")
    out = {"seeds": [r["seed"] for r in per_seed], "k": first["k"], "config": first["config"],
           "ci95": {}}
    for key in ("hard", "easy"):
        out[key], out["ci95"][key] = {}, {}
        for arm in first[key]:
            cols = np.array([r[key][arm] for r in per_seed])
            stats = [mean_ci(cols[:, j]) for j in range(cols.shape[1])]
            out[key][arm] = [s[0] for s in stats]
            out["ci95"][key][arm] = [[s[1], s[2]] for s in stats]
    out["learnable_ratio"] = {a: float(np.mean([r["learnable_ratio"][a] for r in per_seed]))
                              for a in first["learnable_ratio"]}
    out["crossing"] = {}
    for arm in first["hard"]:
        vals = [c for c in (crossing(r, arm) for r in per_seed) if c is not None]
        out["crossing"][arm] = float(np.mean(vals)) if vals else None
    out["cost"] = {a: {k: float(np.mean([r["cost"][a][k] for r in per_seed]))
                       for k in first["cost"][a]} for a in first["cost"]}
    for col in ("hinted_pass_rate", "hint_reliance"):
        out[col] = {}
        for arm in first[col]:
            vals = [r[col][arm] for r in per_seed if r[col][arm] is not None]
            out[col][arm] = float(np.mean(vals)) if vals else None
    out["seconds"] = sum(r["seconds"] for r in per_seed)
    out["per_seed"] = list(per_seed)
    out["claims"] = claims(per_seed, design)
    return out


def protocol_of(cfg: ExitsConfig, seeds: Sequence[int]) -> str:
    if cfg.to_dict() == ExitsConfig(arms=FOLLOWUP_ARMS).to_dict() and tuple(seeds) == FOLLOWUP_SEEDS:
        return "confirmatory follow-up"
    full = cfg.to_dict() == ExitsConfig().to_dict()
    return "confirmatory" if full and tuple(seeds) == CONFIRMATORY_SEEDS else "exploration"


def run(cfg: ExitsConfig, seeds: Sequence[int], *, progress: bool = False,
        design: Sequence[tuple] = CLAIMS) -> dict:
    results = [run_seed(cfg, s, progress=progress) for s in seeds]
    res = results[0] if len(results) == 1 else aggregate(results, design)
    res["protocol"] = protocol_of(cfg, seeds)
    return res


# ----------------------------------------------------------------------------- reports

def arms_table(res: dict) -> str:
    """Markdown: per arm, hint-free held-out hard pass@1 and pass@n, crossing, learnable share,
    hint reliance (training, hinted arms), and the compute spent (mean per seed)."""
    n = res["k"][-1]
    lines = [f"| arm | hard pass@1 | hard pass@{n} | boundary crossing | learnable | hint reliance "
             f"(nats/token) | tokens sampled (plain / hinted / again / hint writing) | tokens "
             f"trained | sampling calls |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in res["hard"]:
        c = res["cost"][arm]
        cross, rel = res["crossing"].get(arm), res.get("hint_reliance", {}).get(arm)
        lines.append(
            f"| {ARM_LABELS[arm]} | {res['hard'][arm][0]:.3f} | {res['hard'][arm][-1]:.3f} | "
            f"{'-' if cross is None else f'{cross:.2f}'} | {res['learnable_ratio'][arm]:.2f} | "
            f"{'-' if rel is None else f'{rel:.2f}'} | "
            f"{c['tokens_sampled']:,.0f} ({c['tokens_plain']:,.0f} / {c['tokens_hinted']:,.0f} / "
            f"{c['tokens_resampled']:,.0f} / {c.get('tokens_hint_writing', 0):,.0f}) | "
            f"{c['tokens_trained']:,.0f} | {c['model_calls'] + c.get('hint_writing_calls', 0):,.0f} |")
    return "\n".join(lines)


def claims_table(res: dict) -> str:
    """Markdown: each pre-registered comparison with its interval, MDE, margin and outcome."""
    n = res["k"][-1]
    lines = [f"| exit vs GRPO | metric (held-out hard, no hints) | diff [{100 * res['claims'][0]['level']:.1f} % CI] "
             f"| MDE | margin | outcome |", "|---|---|---|---|---|---|"]
    for r in res["claims"]:
        lo, hi = r["diff_ci95"]
        metric = "pass@1" if r["metric"] == "hard@1" else f"pass@{n}"
        lines.append(f"| {ARM_LABELS[r['arm']]} | {metric} | {r['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                     f"{r['mde']:.3f} | {r['margin']:.2f} | **{r['outcome']}** |")
    return "\n".join(lines)


def gain_figure(res: dict, metric: str = "hard@1"):
    """Plotly: each arm's hint-free gain over the control (mean, with its claim's interval)
    against the tokens it sampled per seed."""
    by = {r["arm"]: r for r in res["claims"] if r["metric"] == metric}
    label = "pass@1" if metric == "hard@1" else f"pass@{res['k'][-1]}"
    return gain_scatter([(ARM_LABELS[arm], res["cost"][arm]["tokens_sampled"], r["diff"],
                          *r["diff_ci95"]) for arm, r in by.items()],
                        ("GRPO (control)", res["cost"]["grpo"]["tokens_sampled"]),
                        f"hint-free gain over GRPO, held-out hard {label},<br>against tokens sampled",
                        f"gain in {label} (Bonferroni interval)")


def gain_scatter(points, control, title: str, yaxis: str):
    """Plotly: ``points`` (label, tokens, gain, low, high), each a marker with its interval,
    and the control (label, tokens) at gain 0."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, x, diff, lo, hi in points:  # named in the legend: labels on the plot overlap
        fig.add_trace(go.Scatter(
            x=[x], y=[diff], mode="markers", name=name, marker={"size": 10},
            error_y={"type": "data", "symmetric": False, "array": [hi - diff],
                     "arrayminus": [diff - lo]}))
    fig.add_trace(go.Scatter(x=[control[1]], y=[0.0], mode="markers", name=control[0],
                             marker={"symbol": "x", "size": 12, "color": "black"}))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title=title, xaxis_title="completion tokens sampled per run (mean over seeds)",
                      yaxis_title=yaxis, legend={"orientation": "h", "y": -0.25})
    return fig


RESULTS_NAME = "exits_toy.json"


def load_results(name: str = RESULTS_NAME) -> dict | None:
    """The committed results beside this installation, or None."""
    return _load_committed(name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.exits",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="the CI sizes (ExitsConfig.fast)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seeds", type=int, nargs="+", help="seeds (two or more: aggregated)")
    g.add_argument("--confirmatory", action="store_true",
                   help=f"the committed design on the confirmatory seeds {CONFIRMATORY_SEEDS}")
    g.add_argument("--followup", action="store_true",
                   help="the powered follow-up: NuRL vs GRPO at pass@1024 alone, seeds "
                        f"{FOLLOWUP_SEEDS[0]}-{FOLLOWUP_SEEDS[-1]} (FOLLOWUP_SEEDS)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    if (args.confirmatory or args.followup) and args.fast:
        ap.error("--confirmatory and --followup run a committed design: no --fast")
    cfg = ExitsConfig.fast() if args.fast else ExitsConfig()
    seeds = list(CONFIRMATORY_SEEDS) if args.confirmatory else (args.seeds or [600, 601])
    design = CLAIMS
    if args.followup:
        cfg, seeds, design = ExitsConfig(arms=FOLLOWUP_ARMS), list(FOLLOWUP_SEEDS), FOLLOWUP_CLAIMS
    t0 = time.time()
    res = run(cfg, seeds, progress=True, design=design)
    res["wall_seconds"] = round(time.time() - t0, 1)
    out = save_results(res, args.out)
    print(f"wrote {out} ({res['wall_seconds']} s, {res['protocol']})")
    if "claims" in res:
        print(arms_table(res))
        print()
        print(claims_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
