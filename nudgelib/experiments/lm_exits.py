"""Every way out of the 0/G trap on the real model: SmolLM2-135M on CPU, the forked design of
:mod:`nudgelib.experiments.lm_fork` with the exits of :mod:`nudgelib.experiments.exits` as arms.

    python -m nudgelib.experiments.lm_exits --fast --out FILE.json      # CI, about 2 min
    python -m nudgelib.experiments.lm_exits --out data/results/lm_exits.json --work DIR

The design, fixed before its confirmatory run (docs/method.md §10): stage 1, the fork and the
pool exactly as in ``lm_fork`` (one GRPO run of 20 steps, the problems it solves 8/8 dropped
once); then, for each of :data:`SEEDS` and each arm, 14 stage-2 updates from the fork:

============  ===============================================================================
arm           stage 2 (``lm_fork.ARMS``)
============  ===============================================================================
control       GRPO on the pool, G = 8
more_samples  GRPO with G = 16
dynamic       dynamic sampling: flat groups drawn again, up to 2 times
nurl_hinted   NuRL as published (teacher decomposition hints, hinted prompt, PPO-clip)
prefix        the first line of the worked solution on every prompt for the first 8 updates
              (fraction 1.0 annealed to 0 over 14 updates; a two-line solution gives its first
              line while the fraction is >= 0.5)
sft_grpo      4 supervised updates on one-line solutions, then 10 GRPO updates
============  ===============================================================================

Endpoints: hint-free held-out chain pass@8 (n = 32) and pass@1, each exit against the control,
paired over seeds, Bonferroni over the 10 comparisons of :data:`CLAIMS` (99.5 % intervals),
margins 0.06 (pass@k) and 0.008 (pass@1); boundary crossing and each arm's compute ledger
beside them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from nudgelib.experiments import exits, lm_fork
from nudgelib.experiments import lm_fork_report as report
from nudgelib.experiments.toy_nurl import save_results

EXITS = ("more_samples", "dynamic", "nurl_hinted", "prefix", "sft_grpo")
ARMS = ("control", *EXITS)
SEEDS = (30, 31, 32, 33)
"""The confirmatory seeds (lm_fork's were 20-23; the CI variant uses 90-91)."""

CLAIMS = [(f"{arm}_{tag}", f"{arm} raises held-out chain {what} above the control", arm,
           "control", metric, ">")
          for arm in EXITS for tag, what, metric in (("upper", "pass@k", "chain@k"),
                                                     ("pass1", "pass@1", "chain@1"))]
MARGINS = {cid: (0.06 if cid.endswith("_upper") else 0.008) for cid, *_ in CLAIMS}


def design(**changes) -> lm_fork.ForkConfig:
    """The confirmatory design: lm_fork's sizes with these arms and seeds."""
    return lm_fork.ForkConfig(**{"arms": ARMS, "seeds": SEEDS, **changes})


def fast() -> lm_fork.ForkConfig:
    return lm_fork.ForkConfig.fast(arms=ARMS)


def judge_claims(res: dict) -> list[dict]:
    return lm_fork.claims(res, CLAIMS, MARGINS)


def cost_table(res: dict) -> str:
    """Markdown: each arm's compute per seed (mean), and its ratio to the control's. Hint
    writing: the tokens and calls the model spent writing hints (0 for the teacher hints this
    design uses: they come from the reference solutions; a results file written before the
    ledger booked hint writing has no such entry, and the same 0 is true of it)."""
    keys = ("tokens_plain", "tokens_hinted", "tokens_resampled", "tokens_hint_writing",
            "tokens_trained", "model_calls", "hint_writing_calls")
    mean = {arm: {k: float(np.mean([v["cost"].get(k, 0) for v in by.values()])) for k in keys}
            for arm, by in res["arms"].items()}
    ctrl = sum(mean["control"][k] for k in keys[:4]) or 1
    lines = ["| arm | tokens sampled (plain / hinted / again / hint writing) | × control | "
             "tokens trained | model calls (sampling + hint writing) |", "|---|---|---|---|---|"]
    for arm, m in mean.items():
        sampled = sum(m[k] for k in keys[:4])
        lines.append(f"| {report.ARM_LABELS.get(arm, arm)} | {sampled:,.0f} ({m['tokens_plain']:,.0f} / "
                     f"{m['tokens_hinted']:,.0f} / {m['tokens_resampled']:,.0f} / "
                     f"{m['tokens_hint_writing']:,.0f}) | {sampled / ctrl:.2f} | "
                     f"{m['tokens_trained']:,.0f} | {m['model_calls']:,.0f} + "
                     f"{m['hint_writing_calls']:,.0f} |")
    return "\n".join(lines)


def tokens_sampled(res: dict, arm: str) -> float:
    """An arm's tokens generated per (arm, seed), mean over seeds: rollouts and hint writing."""
    keys = ("tokens_plain", "tokens_hinted", "tokens_resampled", "tokens_hint_writing")
    return float(np.mean([sum(v["cost"].get(k, 0) for k in keys) for v in res["arms"][arm].values()]))


def gain_figure(res: dict, metric: str = "chain@k"):
    """Plotly: each exit's hint-free gain over the control on held-out chain problems (its
    claim's mean and Bonferroni interval) against the tokens it sampled."""
    by = {r["a"]: r for r in res["claims"] if r["metric"] == metric}
    label = f"pass@{res['config']['k_primary']}" if metric == "chain@k" else "pass@1"
    return exits.gain_scatter(
        [(report.ARM_LABELS.get(arm, arm), tokens_sampled(res, arm), r["diff"], *r["diff_ci95"])
         for arm, r in by.items()],
        (report.ARM_LABELS.get("control", "control"), tokens_sampled(res, "control")),
        f"SmolLM2-135M: hint-free gain over the control, held-out chain {label},<br>against "
        f"tokens sampled", f"gain in {label} (Bonferroni interval)")


RESULTS_NAME = "lm_exits.json"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.lm_exits",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="the CI sizes")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--work", help="folder for the run folders (kept and resumed)")
    args = ap.parse_args(argv)
    cfg = fast() if args.fast else design()
    res = lm_fork.run_with_work_folder(cfg, args.work, progress=not args.fast,
                                       experiment="lm_exits", judge_claims=judge_claims)
    out = save_results(res, args.out)
    print(f"wrote {out} ({res['seconds']} s, pool {len(res['pool'])} problems)")
    print(report.arms_table(res))
    print(report.claims_table(res))
    print(cost_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
