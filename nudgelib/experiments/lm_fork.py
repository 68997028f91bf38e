"""Can a hint teach SmolLM2-135M what it cannot find alone? NuRL against a control on the same
data, forked from one GRPO run (design v3 of the real-model experiment).

    python -m nudgelib.experiments.lm_fork --fast --out FILE.json            # CI, < 3 min
    python -m nudgelib.experiments.lm_fork --pilot --out pilot.json          # exploration
    python -m nudgelib.experiments.lm_fork --out data/results/lm_nurl.json   # confirmatory

The design (docs/method.md §5; every value below is :class:`ForkConfig`'s default, fixed before
the confirmatory run):

1. **Stage 1, shared.** One GRPO run (``stage1_seed``) on the training problems for
   ``switch_step`` steps: the switch is fixed in advance (the plateau rule never fired by step
   15 in the earlier runs).
2. **The fork.** The problems the stage-1 model solves ``drop_samples``/``drop_samples`` are
   dropped once; the pool that is left is every arm's and every seed's training set. The
   stage-1 model is evaluated once on the held-out problems (the boundary: which problems it
   never solves).
3. **Stage 2.** For each of ``seeds`` (re-seeding sampling and data order after the fork) and
   each arm, ``stage2_updates`` updates from the fork's checkpoint on the pool:

   ==============  ==========================================================================
   arm             stage 2
   ==============  ==========================================================================
   control         GRPO on the pool, no hints: the same data as the NuRL arms
   nurl_hinted     NuRL as published: hinted rollouts scored under the hinted prompt, PPO-clip
   nurl_original   NuRL whose hinted rollouts are trained under the original prompt with a
                   ratio-free surrogate (``condition_on="original"``, ``surrogate="reinforce"``)
   sft_grpo        ``sft_updates`` supervised updates on the pool's chain problems' solutions
                   written in one line (``a + b + c = s``), then GRPO for the remaining updates
   ==============  ==========================================================================

4. **Evaluation, hint-free**, of every (arm, seed): the held-out chain problems with
   ``eval_samples`` samples each (primary: pass@``k_primary`` and pass@1), the other tiers with
   ``regression_samples`` (a regression check) and the pool's chain problems with
   ``learnable_samples`` (the learnable share).
5. **Claims** (:data:`CLAIMS`): each arm against the control, paired over (seed, problem) with a
   t-interval over seed means, Bonferroni-adjusted over the ``len(CLAIMS)`` primary comparisons,
   judged by :func:`nudgelib.core.stats.judge` with the margins of :data:`MARGINS`; boundary
   crossing (the share of held-out chain problems the fork model solves 0/n that the arm solves
   at least once) as a secondary endpoint.
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
from nudgelib.core.stats import judge
from nudgelib.experiments import lm_fork_report as report
from nudgelib.experiments.lm_fork_report import boundary_crossing, metric_values
from nudgelib.experiments.toy_nurl import load_results, save_results
from nudgelib.policies.base import left_pad
from nudgelib.rollouts import evaluate_pass_counts
from nudgelib.tasks.arithmetic import arithmetic_problems
from nudgelib.training.build import build_scorer
from nudgelib.training.config import get_train_config
from nudgelib.training.stages import drop_solved
from nudgelib.training.trainer import Trainer, resume_or_fork, resume_or_start

ARMS: dict[str, dict] = {
    "control": {"nudging": "none"},
    "nurl_hinted": {"nudging": "nurl", "condition_on": "hinted", "surrogate": "ppo_clip"},
    "nurl_original": {"nudging": "nurl", "condition_on": "original", "surrogate": "reinforce"},
    "sft_grpo": {"nudging": "none"},
    # the exits comparison's arms (nudgelib.experiments.lm_exits)
    "more_samples": {"nudging": "none", "group_size": 16},
    "dynamic": {"nudging": "dynamic", "nudging_options": {"max_resamples": 2}},
    "prefix": {"nudging": "prefix", "nudging_options": {"start": 1.0, "anneal_steps": 14}},
}
"""Arm -> TrainConfig overrides of stage 2 (``sft_grpo`` adds its supervised updates first)."""

DESIGN_ARMS = ("control", "nurl_hinted", "nurl_original", "sft_grpo")
"""The arms of this design (the others belong to :mod:`nudgelib.experiments.lm_exits`)."""

CLAIMS = [
    # (id, claim, arm a, arm b, metric, relation)
    ("hinted_upper", "NuRL as published raises the hint-free pass@k of held-out hard problems "
     "above the control", "nurl_hinted", "control", "chain@k", ">"),
    ("original_upper", "NuRL trained under the original prompt raises it above the control",
     "nurl_original", "control", "chain@k", ">"),
    ("sft_upper", "A supervised warm start on worked solutions raises it above the control",
     "sft_grpo", "control", "chain@k", ">"),
    ("hinted_pass1", "NuRL as published raises held-out hard pass@1 above the control",
     "nurl_hinted", "control", "chain@1", ">"),
    ("original_pass1", "NuRL trained under the original prompt raises held-out hard pass@1",
     "nurl_original", "control", "chain@1", ">"),
]
"""The pre-registered comparisons (each arm against the control on the same pool)."""

MARGINS = {"hinted_upper": 0.06, "original_upper": 0.06, "sft_upper": 0.06,
           "hinted_pass1": 0.008, "original_pass1": 0.008}
"""The smallest effects that count: the paper's smallest pass@1024 gain (GPQA +6.1 points) for
the upper bound, its smallest pass@1 gain (+0.8 points) for pass@1."""


@dataclass
class ForkConfig(ListFieldsDict):
    """The design; ``fast()`` is the CI variant, ``pilot()`` the exploration run."""

    LIST_FIELDS = ("seeds", "arms")

    train_counts: dict = field(default_factory=lambda: {"sum": 16, "product": 16, "chain": 64})
    heldout_counts: dict = field(default_factory=lambda: {"sum": 12, "product": 12, "chain": 64})
    problem_seed: int = 0
    preset: str = "cpu"
    stage1_seed: int = 0
    switch_step: int = 20
    stage2_updates: int = 14
    sft_updates: int = 4
    sft_batch: int = 32
    seeds: tuple = (20, 21, 22, 23)
    arms: tuple = DESIGN_ARMS
    drop_samples: int = 8
    eval_samples: int = 32
    k_primary: int = 8
    regression_samples: int = 8
    learnable_samples: int = 8
    protocol: str = "confirmatory"

    def __post_init__(self):
        self.seeds, self.arms = tuple(self.seeds), tuple(self.arms)
        check_fields(self, positive_int=("switch_step", "stage2_updates", "sft_batch",
                                         "drop_samples", "eval_samples", "k_primary",
                                         "regression_samples", "learnable_samples"),
                     non_negative_int=("sft_updates", "problem_seed", "stage1_seed"),
                     choices={"protocol": ("confirmatory", "exploration", "ci")})
        if "control" not in self.arms or any(a not in ARMS for a in self.arms):
            raise ValueError(f"ForkConfig.arms={list(self.arms)}: some of {list(ARMS)}, "
                             f"with 'control'")
        if self.sft_updates >= self.stage2_updates or self.k_primary > self.eval_samples:
            raise ValueError("ForkConfig: sft_updates < stage2_updates and k_primary <= "
                             "eval_samples are needed")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ForkConfig.seeds={list(self.seeds)}: >= 2 distinct seeds")

    @classmethod
    def fast(cls, **changes) -> ForkConfig:
        base = dict(train_counts={"sum": 4, "product": 4, "chain": 8},
                    heldout_counts={"sum": 2, "product": 2, "chain": 6}, switch_step=2,
                    stage2_updates=2, sft_updates=1, sft_batch=8, seeds=(90, 91),
                    eval_samples=8, k_primary=4, regression_samples=2, learnable_samples=4,
                    drop_samples=4, protocol="ci")
        return cls(**{**base, **changes})

    @classmethod
    def pilot(cls, **changes) -> ForkConfig:
        """Exploration on other seeds, smaller: 1 seed pair, 8 stage-2 updates, n = 8."""
        base = dict(heldout_counts={"sum": 4, "product": 4, "chain": 32}, stage2_updates=8,
                    sft_updates=2, seeds=(500, 501), eval_samples=8, k_primary=4,
                    regression_samples=2, learnable_samples=4, protocol="exploration")
        return cls(**{**base, **changes})



def train_config(cfg: ForkConfig, seed: int, arm: str = "control"):
    return get_train_config(cfg.preset, seed=seed, difficulty_counts=dict(cfg.train_counts),
                            n_train_problems=sum(cfg.train_counts.values()), save_every=1,
                            keep_checkpoints=0, drop_solved_samples=cfg.drop_samples,
                            **ARMS[arm])


def sft_pairs(pool) -> list[tuple[str, str]]:
    """(question, one-line solution) for the pool's chain problems: ``a + b + c = s`` (all
    operands, then the sum: what the worked solution says, in the 12 tokens of one line)."""
    out = []
    for p in pool:
        if p.subject == "chain":
            nums = [int(x) for x in p.question.rstrip("?").split("is", 1)[1].split("+")]
            out.append((p.question, " + ".join(map(str, nums)) + f" = {p.answer}"))
    return out


def supervised_updates(trainer: Trainer, pairs, updates: int, batch: int, seed: int, *,
                       count_tokens: bool = False):
    """``updates`` AdamW steps of the trainer's optimizer on -mean log p(solution + newline |
    question) over batches of ``pairs`` (the arm's supervised warm start). Returns the losses
    (and, with ``count_tokens``, the target tokens trained on)."""
    policy = trainer.policy
    targets = [policy.tokenizer(t + "\n", add_special_tokens=False).input_ids for _, t in pairs]
    losses, tokens = supervised_steps(trainer, policy.encode_prompts([q for q, _ in pairs]),
                                      targets, updates, batch, seed)
    return (losses, tokens) if count_tokens else losses


def supervised_steps(trainer: Trainer, prompts: list[list[int]], targets: list[list[int]],
                     updates: int, batch: int, seed: int) -> tuple[list[float], int]:
    """``updates`` steps of the trainer's optimizer on -mean log p(target | prompt) over random
    batches (token ids; targets right-padded), gradients clipped as in training. Returns the
    losses and the target tokens trained on. Any policy: the toy's answer tokens or a language
    model's tokenised solutions."""
    policy, gen = trainer.policy, torch.Generator().manual_seed(seed)
    losses, tokens, dev = [], 0, policy.device
    policy.train_mode(True)
    for _ in range(updates):
        idx = torch.randperm(len(prompts), generator=gen)[:batch].tolist()
        p_ids, p_mask = left_pad([prompts[i] for i in idx], policy.pad_id)
        width = max(len(targets[i]) for i in idx)
        c_ids = torch.full((len(idx), width), policy.pad_id, dtype=torch.long)
        c_mask = torch.zeros(len(idx), width)
        for j, i in enumerate(idx):
            c_ids[j, :len(targets[i])] = torch.tensor(targets[i])
            c_mask[j, :len(targets[i])] = 1
        logp = policy.logprobs(p_ids.to(dev), p_mask.to(dev), c_ids.to(dev), c_mask.to(dev))
        loss = -(logp * c_mask.to(dev)).sum() / c_mask.sum()
        trainer.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.params, trainer.cfg.max_grad_norm)
        trainer.optimizer.step()
        losses.append(float(loss.detach()))
        tokens += int(c_mask.sum())
    policy.train_mode(False)
    return losses, tokens


def run_with_work_folder(cfg: ForkConfig, work: str | None, **kwargs) -> dict:
    """:func:`run` in ``work`` (kept, so a second call resumes), or in a temporary folder that
    is removed afterwards."""
    tmp = None if work else Path(tempfile.mkdtemp(prefix=f"{kwargs.get('experiment', 'lm_fork')}-"))
    try:
        return run(cfg, Path(work) if work else tmp, **kwargs)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def evaluate(cfg: ForkConfig, policy, scorer, heldout: dict, pool, seed: int) -> dict:
    """Hint-free counts: held-out chain (n = eval_samples), other tiers (regression_samples),
    the pool's chain problems (learnable_samples)."""
    gen = torch.Generator().manual_seed(10_007 * (seed + 1))
    out = {}
    for tier, probs in heldout.items():
        n = cfg.eval_samples if tier == "chain" else cfg.regression_samples
        out[tier] = evaluate_pass_counts(policy, probs, scorer, n_samples=n, max_new_tokens=12,
                                         generator=gen, prompts_per_call=max(1, 512 // n))
    chain = [p for p in pool if p.subject == "chain"]
    out["pool_chain"] = evaluate_pass_counts(policy, chain, scorer,
                                             n_samples=cfg.learnable_samples, max_new_tokens=12,
                                             generator=gen) if chain else []
    return out


def run(cfg: ForkConfig, work: Path, *, progress: bool = False, experiment: str = "lm_fork",
        judge_claims=None) -> dict:
    """Stage 1, the fork, every (seed, arm) of stage 2 and its hint-free evaluation; the
    claims judged by ``judge_claims(res)`` (default :func:`claims`). Each (arm, seed) keeps
    its compute ledger (``cost``: the stage-2 rows' ``cost_*`` summed, SFT tokens included)."""
    t0 = time.time()
    train = arithmetic_problems(dict(cfg.train_counts), split="train", seed=cfg.problem_seed)
    heldout = {t: arithmetic_problems({t: n}, split="heldout", seed=cfg.problem_seed)
               for t, n in cfg.heldout_counts.items() if n}
    base_cfg = train_config(cfg, cfg.stage1_seed)
    scorer = build_scorer(base_cfg)
    stage1 = resume_or_start(base_cfg, work / "stage1", problems=train, progress=progress)
    stage1.train(until_step=cfg.switch_step)
    ckpt = stage1.checkpoint_dir(cfg.switch_step)
    pool, _ = drop_solved(stage1.policy, train, scorer, n_samples=cfg.drop_samples,
                          max_new_tokens=12, generator=torch.Generator().manual_seed(77))
    fork_eval = evaluate(cfg, stage1.policy, scorer, heldout, pool, cfg.stage1_seed)
    res = {"experiment": experiment, "protocol": cfg.protocol, "config": cfg.to_dict(),
           "pool": [p.id for p in pool], "fork": fork_eval, "stage1_rows": len(stage1.rows),
           "arms": {}, "sampling": stage1.policy.sampling_info()}
    stage1.close()
    del stage1
    for seed in cfg.seeds:
        for arm in cfg.arms:
            acfg = train_config(cfg, seed, arm)
            tr = resume_or_fork(acfg, work / f"{arm}-{seed}", ckpt, pool=pool, problems=train,
                                progress=progress)
            sft, sft_tokens = [], 0
            if arm == "sft_grpo" and tr.step == cfg.switch_step:
                sft, sft_tokens = supervised_updates(tr, sft_pairs(pool), cfg.sft_updates,
                                                     cfg.sft_batch, seed, count_tokens=True)
            grpo_steps = cfg.stage2_updates - (cfg.sft_updates if arm == "sft_grpo" else 0)
            tr.train(until_step=cfg.switch_step + grpo_steps)
            rows = tr.rows[cfg.switch_step:]
            cost = {k[5:]: int(sum(r.get(k) or 0 for r in rows)) for k in rows[0]
                    if k.startswith("cost_")} if rows else {}
            cost["tokens_trained"] = cost.get("tokens_trained", 0) + sft_tokens
            res["arms"].setdefault(arm, {})[str(seed)] = {
                "eval": evaluate(cfg, tr.policy, scorer, heldout, pool, seed),
                "cost": cost,
                "sft_losses": sft,
                "curves": {k: [r.get(k) for r in rows] for k in (
                    "reward_mean", "pass_rate", "frac_nudged", "hinted_successes",
                    "hint_reliance", "format_number", "format_one_step",
                    "format_several_steps", "grad_norm")}}
            tr.close()
    res["claims"] = (judge_claims or claims)(res)
    res["exploratory"] = {"what": EXPLORATORY, "rows": report.exploratory(res)}
    res["seconds"] = round(time.time() - t0, 1)
    return res


def claims(res: dict, spec: Sequence = CLAIMS, margins: dict | None = None) -> list[dict]:
    """Every claim of ``spec`` whose arms were run: paired seed-level differences, Bonferroni
    over ``len(spec)``, with MDE, margin (``margins``, default :data:`MARGINS`) and verdict;
    boundary crossing beside them."""
    margins = MARGINS if margins is None else margins
    seeds = [str(s) for s in res["config"]["seeds"]]
    rows = []
    for cid, text, a, b, metric, rel in spec:
        if a not in res["arms"] or b not in res["arms"]:
            continue
        va = [float(np.mean(metric_values(res, a, s, metric))) for s in seeds]
        vb = [float(np.mean(metric_values(res, b, s, metric))) for s in seeds]
        cross = [boundary_crossing(res, a, s) for s in seeds]
        rows.append({"id": cid, "claim": text, "a": a, "b": b, "metric": metric,
                     "relation": rel, "a_mean": float(np.mean(va)), "b_mean": float(np.mean(vb)),
                     **judge(rel, [x - y for x, y in zip(va, vb)], margins[cid],
                             comparisons=len(spec)),
                     "boundary_crossing_a": [c for c in cross if c is not None]})
    return rows


EXPLORATORY = ("per held-out chain problem, the arm's pass@k averaged over the seeds minus the "
               "control's, 95 % bootstrap interval over the problems: the effect for these "
               "trained models, not for a new training seed (it leaves the seed-to-seed variance "
               "out); not pre-registered, it never changes a verdict")
"""What the results file's ``exploratory`` block is (:func:`lm_fork_report.exploratory`)."""

RESULTS_NAME = "lm_nurl.json"
"""The committed confirmatory run (the real-model experiment's current design)."""


def load_committed(name: str = RESULTS_NAME) -> dict | None:
    """The committed confirmatory results (``data/results/lm_nurl.json``), or None without a
    checkout."""
    return load_results(name)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.lm_fork",
                                 description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--fast", action="store_true", help="the CI sizes (ForkConfig.fast)")
    g.add_argument("--pilot", action="store_true", help="exploration (ForkConfig.pilot)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--work", help="folder for the run folders (kept and resumed)")
    args = ap.parse_args(argv)
    cfg = ForkConfig.fast() if args.fast else ForkConfig.pilot() if args.pilot else ForkConfig()
    res = run_with_work_folder(cfg, args.work, progress=not args.fast)
    out = save_results(res, args.out)
    print(f"wrote {out} ({res['seconds']} s, pool {len(res['pool'])} problems)")
    print(report.arms_table(res))
    print(report.claims_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
