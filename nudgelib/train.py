"""The training loop: sample -> verify -> nudge -> advantages -> loss -> step, resumable.

    cfg = get_train_config("toy-fast", seed=0)
    trainer = Trainer(cfg, out_dir="runs/toy")
    df = trainer.train(until_step=20)        # metrics per step (also runs/toy/metrics.jsonl)

or headless, the same thing:

    python -m nudgelib.train --config toy-fast --steps 20 --out runs/toy [--seed S]
        [--save-every K] [--resume] [--nudging nurl] [--hint-bank DIR] [--set key=value ...]
        [--fork-from OTHER_RUN/checkpoints/step-NNNNNN]

The run's final policy is exported to ``out/adapter`` (a standard PEFT adapter for LoRA).

Each step: draw ``prompts_per_step`` problems in a seeded per-epoch order; sample
``group_size`` completions each; score them; hand the batch to the nudging hook (where NuRL
acts, :mod:`nudgelib.nudging`); compute advantages (:mod:`nudgelib.advantages`) and the
policy loss (:mod:`nudgelib.losses`) over micro-batches; clip gradients; step AdamW.
With ``stage1`` set, nudging waits for stage 2 (METHOD.md 2.4): plain GRPO until a plateau
(or a fixed step), then the problems solved n/n are dropped and nudging switches on.

Checkpoints (``out/checkpoints/step-NNNNNN/``) hold the policy (a standard PEFT adapter for
LoRA policies), the optimizer and scheduler, every RNG state, the step counter and the data
order, and are written to a temporary folder and renamed, so a run killed at any moment
resumes from its last complete checkpoint and logs exactly what an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from nudgelib.advantages import ESTIMATORS, compute_advantages
from nudgelib.hints import HINT_TYPES
from nudgelib.losses import AGGREGATIONS, KL_ESTIMATORS, SURROGATES, microbatch_scale, policy_loss
from nudgelib.nudging import CONDITION_ON, STRATEGIES, PlateauDetector, SamplingContext
from nudgelib.policies import shared_rows
from nudgelib.problems import Problem
from nudgelib.rollouts import (
    ExactMatchScorer,
    MathScorer,
    RolloutBatch,
    length_buckets,
    trim_padding,
)

POLICIES = ("char-transformer", "toy-table", "hf")
TASKS = ("addition", "toy-table", "gsm8k", "math500")
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
_COMPLETE = "COMPLETE"
# fields that may differ between a run and its resumption
_RESUMABLE_CHANGES = {"save_every", "keep_checkpoints"}
# fields a run forked from another run's checkpoint may change (Trainer.fork_from): what to do
# from now on (nudging, stages, validation), never what the state was made of
_FORK_CHANGES = _RESUMABLE_CHANGES | {
    "name", "nudging", "hint_type", "condition_on", "hint_bank", "nudging_options",
    "hint_explanation_tokens", "hint_tokens", "stage1", "stage1_steps", "plateau_metric",
    "plateau_patience", "plateau_window", "plateau_min_delta", "drop_solved_samples",
    "val_every", "n_val_problems", "val_samples"}
FORK_FILE = "fork.json"
ADAPTER = "adapter"


class ConfigError(ValueError):
    """A training configuration value is invalid; the message names the field."""


def reject_unknown_fields(cls, d: dict, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming every key of ``d`` that is not a field of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise error(f"unknown {cls.__name__} field(s) {unknown}; fields are {sorted(known)}")


@dataclass
class TrainConfig:
    """Everything a run depends on. Validated on creation; errors name the field."""

    name: str = "custom"
    policy: str = "char-transformer"
    task: str = "addition"
    # --- problems
    model_id: str = ""
    train_split: str = "train"
    n_train_problems: int = 64
    problem_selection: str = "random"  # or "shortest" (short prompts: fast CPU runs)
    difficulty_counts: dict = field(default_factory=lambda: {"easy": 40, "medium": 40,
                                                             "hard": 40})
    # --- tiny transformer
    warm_start_steps: int = 400
    char_d_model: int = 64
    char_layers: int = 2
    char_heads: int = 4
    # --- sampling
    group_size: int = 8
    prompts_per_step: int = 16
    max_new_tokens: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    prompts_per_call: int = 0  # 0: all prompts of a step in one sampling call
    # --- RL objective (METHOD.md section 4)
    estimator: str = "grpo"
    estimator_options: dict = field(default_factory=dict)
    surrogate: str = "ppo_clip"
    aggregation: str = "token_mean"
    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_beta: float = 0.0
    kl_estimator: str = "k3"
    # --- optimisation
    lr: float = 1e-3
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ppo_epochs: int = 1
    micro_batch_size: int = 64  # completion rows per forward/backward
    skip_zero_advantage: bool = True  # exact when kl_beta == 0: those rows add 0 to the loss
    # --- language models
    lora_rank: int = 8
    lora_alpha: int = 0  # 0: 2 x rank
    lora_dropout: float = 0.0
    load_in_4bit: bool = False
    dtype: str = ""  # "": bfloat16/float16 on GPU, float32 on CPU
    device: str = ""  # "": cuda when available
    gradient_checkpointing: bool = False
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    # --- rewards for real math
    format_weight: float = 0.0
    overlong_weight: float = 0.0
    # --- nudging (METHOD.md sections 2-3; nudgelib.nudging)
    nudging: str = "none"  # none | nurl | scaf | nudgerl | always
    hint_type: str = "abstract"  # nurl / always: which hints of the bank
    condition_on: str = "hinted"  # nurl / scaf: prompt a hinted rollout is scored under
    hint_bank: str = ""  # a saved HintBank; "": toy tasks use built-in hints, LM tasks
    #                      generate self-hints before training (saved to out/hint_bank)
    nudging_options: dict = field(default_factory=dict)  # strategy keyword arguments
    hint_explanation_tokens: int = 192  # self-hints: budget of call 1 (the explanation)
    hint_tokens: int = 64  # self-hints: budget of call 2 (the hint)
    warm_start_hints: float = 0.25  # char model: share of warm-start sums also shown hinted
    # --- two stages (METHOD.md 2.4): stage 1 plain GRPO, then nudging
    stage1: str = "none"  # none (nudge from step 1) | plateau | steps
    stage1_steps: int = 0  # steps: length of stage 1; plateau: its maximum (0: no maximum)
    plateau_metric: str | list = "reward_mean"  # or several: the stage ends when all plateau
    plateau_patience: int = 10
    plateau_window: int = 5
    plateau_min_delta: float = 0.0
    drop_solved_samples: int = 8  # between stages: drop problems solved n/n (0: keep all)
    # --- validation: hint-free pass rate on held-out problems (a plateau signal, a curve)
    val_every: int = 0  # 0: no validation
    n_val_problems: int = 16
    val_samples: int = 4
    # --- bookkeeping
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2  # 0: keep all

    def __post_init__(self):
        def bad(name, expected):
            raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid; "
                              f"expected {expected}")

        for name, choices in (("policy", POLICIES), ("task", TASKS),
                              ("problem_selection", ("random", "shortest")),
                              ("estimator", tuple(ESTIMATORS)), ("surrogate", tuple(SURROGATES)),
                              ("aggregation", AGGREGATIONS), ("kl_estimator", KL_ESTIMATORS),
                              ("nudging", tuple(STRATEGIES)), ("hint_type", HINT_TYPES),
                              ("condition_on", CONDITION_ON),
                              ("stage1", ("none", "plateau", "steps"))):
            if getattr(self, name) not in choices:
                bad(name, f"one of {sorted(choices)}")
        for name in ("n_train_problems", "group_size", "prompts_per_step", "max_new_tokens",
                     "ppo_epochs", "micro_batch_size", "char_d_model", "char_layers",
                     "char_heads", "plateau_patience", "plateau_window", "hint_tokens",
                     "hint_explanation_tokens", "n_val_problems", "val_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "a positive integer")
        for name in ("warm_start_steps", "warmup_steps", "save_every", "keep_checkpoints",
                     "lora_rank", "lora_alpha", "prompts_per_call", "seed", "stage1_steps",
                     "drop_solved_samples", "val_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "an integer >= 0")
        for name in ("lr", "temperature", "max_grad_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad(name, "a finite number > 0")
        for name in ("kl_beta", "weight_decay", "format_weight", "overlong_weight", "eps_low",
                     "eps_high", "lora_dropout", "plateau_min_delta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "a finite number >= 0")
        if not 0 < self.top_p <= 1:
            bad("top_p", "a number in (0, 1]")
        if self.eps_low >= 1:
            bad("eps_low", "a number in [0, 1)")
        if self.group_size < 2:
            bad("group_size", "at least 2 (group advantages need a group)")
        if not isinstance(self.difficulty_counts, dict) or not all(
                isinstance(v, int) and v >= 0 for v in self.difficulty_counts.values()):
            bad("difficulty_counts", "a dict {difficulty: count >= 0}")
        if not isinstance(self.estimator_options, dict):
            bad("estimator_options", "a dict of keyword arguments for the estimator")
        if not isinstance(self.nudging_options, dict):
            bad("nudging_options", "a dict of keyword arguments for the nudging strategy")
        if not isinstance(self.warm_start_hints, (int, float)) or not 0 <= self.warm_start_hints <= 1:
            bad("warm_start_hints", "a share in [0, 1]")
        if self.stage1 == "steps" and self.stage1_steps < 1:
            bad("stage1_steps", "an integer >= 1 when stage1='steps'")
        if self.stage1 != "none" and self.nudging == "none":
            bad("stage1", "'none' when nudging='none' (the stages switch nudging on)")
        watched = [self.plateau_metric] if isinstance(self.plateau_metric, str) \
            else self.plateau_metric
        if not isinstance(watched, list) or not watched or not all(
                isinstance(m, str) and m for m in watched):
            bad("plateau_metric", "the name of a metrics column such as 'reward_mean', or a "
                                  "list of names (e.g. ['reward_mean', 'val_pass_rate'])")
        if "val_pass_rate" in watched and not self.val_every:
            bad("plateau_metric", "metrics without 'val_pass_rate' when val_every=0 (set "
                                  "val_every to validate)")
        if self.val_every and self.task == "toy-table":
            bad("val_every", "0 for task='toy-table' (its problems have no held-out set)")
        if self.drop_solved_samples == 1:
            bad("drop_solved_samples", "0 (keep all) or at least 2 samples")
        if self.policy == "hf" and not self.model_id:
            bad("model_id", "a hub id, a local path or 'offline:smollm2-135m-instruct' "
                            "(policy='hf')")
        if self.policy == "toy-table" and self.task != "toy-table":
            bad("task", "'toy-table' for policy='toy-table'")
        if self.policy != "hf" and self.task in ("gsm8k", "math500"):
            bad("task", f"a toy task for policy={self.policy!r} (real math needs policy='hf')")
        if self.policy == "char-transformer" and self.task != "addition":
            bad("task", "'addition' for policy='char-transformer'")
        if self.kl_beta > 0 and self.policy != "hf":
            bad("kl_beta", "0 for toy policies (the KL reference is the LoRA base model)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        reject_unknown_fields(cls, d, ConfigError)
        return cls(**d)

    def with_overrides(self, **changes) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


SHORT_ANSWER_INSTRUCTION = "Answer with the final number in \\boxed{}."
"""cpu-fast's instruction: SmolLM2-135M rarely finishes a step-by-step answer in 32 tokens, so
every reward would be the same truncation penalty and no group would carry a gradient. Asked
for the number alone, some of its completions end in time, which gives the mechanics in CI
real reward variance (its answers are still almost never right)."""


def _lm_config(preset_name: str) -> TrainConfig:
    from nudgelib.presets import PRESETS

    p = PRESETS[preset_name]
    fast = preset_name == "cpu-fast"
    extra = {"instruction": SHORT_ANSWER_INSTRUCTION, "hint_explanation_tokens": 64,
             "hint_tokens": 32} if fast else {}
    return TrainConfig(
        name=preset_name, policy="hf", task="gsm8k", model_id=p.model_id,
        n_train_problems=p.n_train_problems,
        problem_selection="shortest" if p.device == "cpu" else "random",
        group_size=p.group_size, prompts_per_step=p.prompts_per_step,
        max_new_tokens=p.max_new_tokens, lr=2e-5 if not fast else 1e-4,
        lora_rank=p.lora_rank, load_in_4bit=p.load_in_4bit, dtype=p.dtype, device=p.device,
        gradient_checkpointing=p.device == "cuda", micro_batch_size=8 if fast else 16,
        format_weight=0.1, overlong_weight=1.0, warmup_steps=0 if fast else 5, **extra)


def get_train_config(name: str, **overrides) -> TrainConfig:
    """A named training preset, optionally with field overrides.

    * ``toy-fast`` — tiny char transformer on addition (1-3 digits), seconds per step on CPU;
    * ``toy-table`` — the categorical toy of :mod:`nudgelib.toy`;
    * ``cpu-fast``, ``cpu``, ``colab-t4``, ``large-gpu`` — LoRA on a real LM and GSM8K, sized
      by :data:`nudgelib.presets.PRESETS`.
    """
    if name == "toy-fast":
        cfg = TrainConfig(name=name, lr=3e-4, prompts_per_step=32)
    elif name == "toy-table":
        cfg = TrainConfig(name=name, policy="toy-table", task="toy-table",
                          difficulty_counts={"easy": 8, "medium": 8, "hard": 8},
                          prompts_per_step=24, max_new_tokens=12, lr=0.1, eps_high=0.2)
    elif name in ("cpu-fast", "cpu", "colab-t4", "large-gpu"):
        cfg = _lm_config(name)
    else:
        raise ConfigError(f"unknown training preset {name!r}; expected one of "
                          f"{sorted(TRAIN_PRESETS)} or a path to a JSON config file")
    return cfg.with_overrides(**overrides) if overrides else cfg


TRAIN_PRESETS = ("toy-fast", "toy-table", "cpu-fast", "cpu", "colab-t4", "large-gpu")


# ----------------------------------------------------------------------------- building blocks

def _ordered_pool(cfg: TrainConfig) -> list[Problem]:
    from nudgelib.problems import load_problems

    probs = load_problems(cfg.task, cfg.train_split)
    if cfg.problem_selection == "shortest":
        return sorted(probs, key=lambda p: (len(p.question), p.id))
    order = torch.randperm(len(probs), generator=torch.Generator().manual_seed(cfg.seed))
    return [probs[i] for i in order.tolist()]


def build_problems(cfg: TrainConfig) -> list[Problem]:
    """The training problems the config names (deterministic for a given config)."""
    if cfg.task == "addition":
        from nudgelib.toy import addition_problems

        return addition_problems(cfg.difficulty_counts, seed=cfg.seed + 1)
    if cfg.task == "toy-table":
        from nudgelib.toy import ToyTask, toy_problems

        return toy_problems(ToyTask.make(cfg.difficulty_counts, seed=cfg.seed))
    return _ordered_pool(cfg)[:cfg.n_train_problems]


def build_val_problems(cfg: TrainConfig) -> list[Problem]:
    """Held-out validation problems, never trained on: for real math, the ``n_val_problems``
    that follow the training problems in the same order of the training split; for addition,
    fresh sums of the same difficulties that are not training questions."""
    if cfg.task == "addition":
        from nudgelib.toy import ADDITION_DIGITS, addition_problems

        seen = {p.question for p in build_problems(cfg)}
        levels = [k for k, v in cfg.difficulty_counts.items() if v]
        counts = {k: cfg.n_val_problems // len(levels) + (i < cfg.n_val_problems % len(levels))
                  for i, k in enumerate(levels)}
        out = []
        for k, n in counts.items():
            digits = ADDITION_DIGITS.get(k, k)
            lo = 0 if digits == 1 else 10 ** (digits - 1)
            pool = addition_problems({k: min(4 * n + len(seen), (10**digits - lo) ** 2)},
                                     seed=cfg.seed + 99)
            fresh = [p for p in pool if p.question not in seen][:n]
            if len(fresh) < n:
                raise ConfigError(f"TrainConfig.n_val_problems={cfg.n_val_problems}: only "
                                  f"{len(fresh)} {k!r} sums are left that are not training "
                                  f"questions")
            out += fresh
        return out
    if cfg.task == "toy-table":
        raise ConfigError("TrainConfig.val_every: task 'toy-table' has no held-out problems")
    return _ordered_pool(cfg)[cfg.n_train_problems:cfg.n_train_problems + cfg.n_val_problems]


def warm_start_pairs(cfg: TrainConfig) -> list[tuple[str, str]]:
    """Supervised data for the tiny transformer: all 1-digit sums and 2000 2-digit sums, plus
    a ``warm_start_hints`` share of them again with a random-type hint in front
    (``H6.|59+7=``), so the model has seen the hint format before nudging shows it one."""
    from nudgelib.policies import CharTransformerPolicy
    from nudgelib.toy import addition_hint_text, addition_problems

    easy = [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]
    medium = addition_problems({2: 2000}, seed=10_000 + cfg.seed)
    pairs = easy + [(p.question, p.answer) for p in medium]
    rng = random.Random(20_000 + cfg.seed)
    template = CharTransformerPolicy.hint_template
    hinted = [(template.format(hint=addition_hint_text(q, a, rng.choice(HINT_TYPES)), question=q),
               a) for q, a in pairs if rng.random() < cfg.warm_start_hints]
    return pairs + hinted


def build_policy(cfg: TrainConfig, *, warm: bool = True, progress: bool = False):
    """The policy of ``cfg``; ``warm=False`` skips the char model's warm start (for resuming)."""
    if cfg.policy == "char-transformer":
        from nudgelib.policies import CharTransformerConfig, CharTransformerPolicy, warm_start

        pol = CharTransformerPolicy(CharTransformerConfig(
            d_model=cfg.char_d_model, n_layers=cfg.char_layers, n_heads=cfg.char_heads),
            seed=cfg.seed)
        if warm and cfg.warm_start_steps:
            warm_start(pol, warm_start_pairs(cfg), steps=cfg.warm_start_steps, seed=cfg.seed,
                       progress=progress)
        return pol
    if cfg.policy == "toy-table":
        from nudgelib.policies import CategoricalPolicy
        from nudgelib.toy import ToyPolicy, ToyTask

        task = ToyTask.make(cfg.difficulty_counts, seed=cfg.seed)
        return CategoricalPolicy(ToyPolicy(task, max_len=cfg.max_new_tokens))
    from nudgelib.policies import HFPolicy

    torch.manual_seed(cfg.seed)  # LoRA's A matrices are initialised from the global RNG
    return HFPolicy.from_pretrained(
        cfg.model_id, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha or None,
        lora_dropout=cfg.lora_dropout, load_in_4bit=cfg.load_in_4bit, dtype=cfg.dtype or None,
        device=cfg.device or None, gradient_checkpointing=cfg.gradient_checkpointing,
        instruction=cfg.instruction)


def build_scorer(cfg: TrainConfig):
    if cfg.task in ("addition", "toy-table"):
        return ExactMatchScorer()
    return MathScorer(format_weight=cfg.format_weight, overlong_weight=cfg.overlong_weight,
                      max_len=cfg.max_new_tokens if cfg.overlong_weight else None)


def build_hints(cfg: TrainConfig, hint_types: Sequence[str], problems: Sequence[Problem], policy,
                out: Path | None = None, *, progress: bool = False):
    """The hints nudging uses: a saved bank (``cfg.hint_bank``), the built-in toy hints, or
    self-generated hints of ``hint_types`` written by ``policy`` before any training (NuRL's
    offline step), saved to ``out/hint_bank`` and reused when the run resumes."""
    from nudgelib.hints import HintBank, generate_hints
    from nudgelib.toy import toy_hint

    if cfg.hint_bank:
        path = Path(cfg.hint_bank)
        if not path.exists():
            raise ConfigError(f"TrainConfig.hint_bank={cfg.hint_bank!r}: no such folder (save a "
                              f"bank with HintBank.save or dataset.save_to_disk)")
        return HintBank.load(path)
    if cfg.task in ("addition", "toy-table"):
        return toy_hint
    saved = out / "hint_bank" if out is not None else None
    if saved is not None and saved.exists():
        return HintBank.load(saved)
    banks = [generate_hints(policy, problems, kind, source="self", progress=progress,
                            max_explanation_tokens=cfg.hint_explanation_tokens,
                            max_hint_tokens=cfg.hint_tokens,
                            generator=torch.Generator().manual_seed(cfg.seed + 17))
             for kind in hint_types]
    bank = HintBank.merge(banks)
    bank.stats = {b.stats["hint_type"]: b.stats for b in banks}
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        bank.save(saved)
    return bank


def build_nudger(cfg: TrainConfig, hints=None):
    """The strategy ``cfg.nudging`` names, with the config's hint options (None for 'none').
    Without ``hints``, attach them later with ``use_hints`` (its ``hint_types`` say which)."""
    from nudgelib.nudging import make_strategy

    if cfg.nudging == "none":
        return None
    opts = dict(cfg.nudging_options)
    if cfg.nudging in ("nurl", "always"):
        opts.setdefault("hint_type", cfg.hint_type)
    if cfg.nudging in ("nurl", "scaf"):
        opts.setdefault("condition_on", cfg.condition_on)
    if cfg.nudging == "scaf" and cfg.task in ("addition", "toy-table"):
        opts.setdefault("combine", "last")  # a toy hint of a higher tier holds the lower ones
    try:
        return make_strategy(cfg.nudging, hints, **opts)
    except ValueError as err:
        raise ConfigError(f"TrainConfig.nudging_options: {err}") from None


# ----------------------------------------------------------------------------- trainer

Nudger = Callable[["Trainer", RolloutBatch], RolloutBatch]
"""The hook between verification and advantages: takes the scored batch, returns it (possibly
with hinted members). ``None`` is plain GRPO."""


def _rng_state() -> dict:
    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs and checkpoints RL training for one :class:`TrainConfig`.

    ``policy``, ``problems`` and ``scorer`` default to what the config builds; pass them to
    train something of your own. ``callbacks`` are called as ``cb(trainer, row, batch)`` after
    every step (the live dashboard of the notebooks is one).
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike | None = None, *,
                 policy=None, problems: Sequence[Problem] | None = None, scorer=None,
                 nudger: Nudger | None = None, callbacks: Sequence[Callable] = (),
                 progress: bool = True, warm: bool = True,
                 val_problems: Sequence[Problem] | None = None):
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        torch.manual_seed(cfg.seed)
        self.problems = list(problems) if problems is not None else build_problems(cfg)
        if not self.problems:
            raise ConfigError("the training set is empty; check n_train_problems / "
                              "difficulty_counts")
        self.policy = policy if policy is not None else build_policy(cfg, warm=warm,
                                                                      progress=progress)
        self.scorer = scorer or build_scorer(cfg)
        self.all_problems = list(self.problems)
        if nudger is None and cfg.nudging != "none":
            nudger = build_nudger(cfg)
            nudger.use_hints(build_hints(cfg, nudger.hint_types, self.problems, self.policy,
                                         self.out, progress=progress))
        self.nudger = nudger
        # stage 2 = nudging on; a run without nudging stays in stage 1
        self.stage = 1 if cfg.stage1 != "none" or cfg.nudging == "none" else 2
        self.stage_switch_step: int | None = None
        self.detectors = {m: PlateauDetector(cfg.plateau_patience, window=cfg.plateau_window,
                                             min_delta=cfg.plateau_min_delta)
                          for m in self.plateau_metrics} if cfg.stage1 == "plateau" else {}
        self.val_problems = (list(val_problems) if val_problems is not None
                             else build_val_problems(cfg)) if cfg.val_every else []
        self.callbacks = list(callbacks)
        self.params = self.policy.trainable_parameters()
        if not self.params:
            raise ConfigError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.99),
                                           weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.step = 0
        self.epoch, self.cursor = 0, 0
        self.sample_rng = torch.Generator().manual_seed(cfg.seed)
        self.rows: list[dict] = []
        self.last_batch: RolloutBatch | None = None
        self.fork_info: dict | None = None
        self._t0 = time.time()

    # -- data order
    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.problems), generator=g).tolist()

    def next_problems(self) -> list[Problem]:
        """The next ``prompts_per_step`` problems of a seeded per-epoch shuffle."""
        out = []
        perm = self._perm(self.epoch)
        while len(out) < self.cfg.prompts_per_step:
            if self.cursor >= len(perm):
                self.epoch, self.cursor = self.epoch + 1, 0
                perm = self._perm(self.epoch)
            out.append(self.problems[perm[self.cursor]])
            self.cursor += 1
        return out

    # -- one step
    def sample_batch(self, problems: Sequence[Problem]) -> RolloutBatch:
        return SamplingContext.from_trainer(self).collect(problems, progress=self.progress)

    def _micro_batches(self, batch: RolloutBatch, rows: torch.Tensor) -> list[torch.Tensor]:
        """``rows`` in micro-batches of at most ``micro_batch_size``, grouped by completion length
        (:func:`nudgelib.rollouts.length_buckets`); the loss is the same, see microbatch_scale."""
        if len(rows) == 0:
            return []
        _, prompt_key = shared_rows(batch.prompt_ids[rows], batch.prompt_mask[rows])
        buckets = length_buckets(batch.completion_mask[rows].sum(-1).tolist(),
                                 prompt_key.tolist(), batch.prompt_mask[rows].sum(-1).tolist(),
                                 self.cfg.micro_batch_size)
        return [rows[torch.tensor(b, dtype=torch.long)] for b in buckets]

    def _loss_and_backward(self, batch: RolloutBatch, nudging: bool = False) -> dict:
        cfg = self.cfg
        adv = batch.advantages
        full_mask = batch.completion_mask
        rows = torch.arange(len(batch))
        if cfg.skip_zero_advantage and cfg.kl_beta == 0:
            rows = rows[adv != 0]
        stats_sum: dict[str, float] = {}
        total_loss = 0.0
        self.policy.train_mode(True)
        dev = self.policy.device
        for _ in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=False)
            for idx in self._micro_batches(batch, rows):
                cm = batch.completion_mask[idx]
                args = [t.to(dev) for t in trim_padding(batch.prompt_ids[idx], batch.prompt_mask[idx],
                                                        batch.completion_ids[idx], cm)]
                width = args[2].shape[1]
                logp = self.policy.logprobs(*args, temperature=cfg.temperature)
                ref = None
                if cfg.kl_beta > 0:
                    ref = self.policy.reference_logprobs(*args, temperature=cfg.temperature)
                loss, stats = policy_loss(
                    logp, batch.old_logp[idx, :width].to(dev), adv[idx].to(dev), args[3],
                    surrogate=cfg.surrogate, aggregation=cfg.aggregation, eps_low=cfg.eps_low,
                    eps_high=cfg.eps_high, ref_logp=ref, kl=cfg.kl_estimator if ref is not None
                    else None, beta=cfg.kl_beta, max_len=cfg.max_new_tokens)
                scale = microbatch_scale(cfg.aggregation, cm, full_mask)
                total = loss * scale
                aux = self.nudger.auxiliary_loss(self.policy, batch, idx,
                                                 temperature=cfg.temperature) \
                    if nudging and hasattr(self.nudger, "auxiliary_loss") else None
                if aux is not None:
                    total = total + aux
                    stats_sum["aux_loss"] = stats_sum.get("aux_loss", 0.0) + float(aux.detach()) / cfg.ppo_epochs
                total.backward()
                total_loss += float(total.detach()) / cfg.ppo_epochs
                w = float(cm.sum())
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + v * w
                stats_sum["_w"] = stats_sum.get("_w", 0.0) + w
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
        self.scheduler.step()
        self.policy.train_mode(False)
        w = stats_sum.pop("_w", 0.0)
        aux = stats_sum.pop("aux_loss", None)
        out = {k: v / w for k, v in stats_sum.items() if k != "n_tokens"} if w else {}
        if aux is not None:
            out["aux_loss"] = aux
        out.update(loss=total_loss, grad_norm=float(grad_norm), rows_trained=int(len(rows)))
        return out

    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.time()
        problems = self.next_problems()
        nudging = self.nudger is not None and self.stage == 2
        batch = None
        if nudging and hasattr(self.nudger, "sample"):
            batch = self.nudger.sample(problems, SamplingContext.from_trainer(self))
        if batch is None:
            batch = self.sample_batch(problems)
        plain = self._plain_metrics(batch)  # before nudging: what the policy does unaided
        t1 = time.time()
        if nudging:
            batch = self.nudger(self, batch)
        if batch.advantages is None:
            batch.advantages = compute_advantages(batch.rewards, batch.group, cfg.estimator,
                                                  **cfg.estimator_options)
        t2 = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        stats = self._loss_and_backward(batch, nudging)
        self.step += 1
        t3 = time.time()
        hinted = batch.hinted
        mask = batch.completion_mask
        row = {
            "step": self.step,
            "stage": self.stage,
            "reward_mean": float(batch.rewards.mean()),
            "reward_std": float(batch.rewards.std(unbiased=False)),
            **plain,
            "frac_zero_std": batch.frac_zero_std(),
            "frac_nudged": float(batch.extra.get("frac_nudged", 0.0)),
            "hinted_pass_rate": float(batch.correct[hinted].float().mean()) if hinted.any()
            else None,
            "adv_abs_mean": float(batch.advantages.abs().mean()),
            "len_mean": float(batch.lengths.float().mean()),
            "truncated_frac": float(batch.truncated.float().mean()),
            "entropy_est": float(-(batch.old_logp * mask).sum() / mask.sum().clamp(min=1)),
            "lr": lr,
            **stats,
            "epoch": self.epoch,
            "n_problems": len(self.problems),
            "t_sample": round(t1 - t0, 4),
            "t_train": round(t3 - t2, 4),
        }
        if cfg.val_every and self.step % cfg.val_every == 0:
            t4 = time.time()
            row["val_pass_rate"] = self.validate()
            row["t_val"] = round(time.time() - t4, 4)
        self.last_batch = batch
        if self.stage == 1 and cfg.stage1 != "none" and self._stage_one_done(row):
            row.update(self.enter_stage_two())
        return row

    def _plain_metrics(self, batch: RolloutBatch) -> dict:
        """pass_rate (and per level) and learnable_ratio over the hint-free rollouts."""
        plain = ~batch.hinted
        if not plain.any():
            return {"pass_rate": None, "learnable_ratio": None}
        group, correct = batch.group[plain], batch.correct[plain].float()
        passes = torch.zeros(batch.n_groups).index_add_(0, group, correct)
        seen = torch.bincount(group, minlength=batch.n_groups) > 0
        out = {"pass_rate": float(correct.mean()),
               "learnable_ratio": float((passes[seen] > 0).float().mean())}
        levels = [batch.problems[g].level for g in group.tolist()]
        for lv in sorted({lv for lv in levels if lv is not None}):
            sel = torch.tensor([x == lv for x in levels])
            out[f"pass_rate_L{lv}"] = float(correct[sel].mean())
        return out

    def validate(self, n_samples: int | None = None) -> float:
        """Hint-free pass rate on the validation problems (``val_samples`` each). Sampled with
        a generator seeded by the step, so validating never shifts the training samples."""
        from nudgelib.rollouts import evaluate_pass_counts

        cfg = self.cfg
        if not self.val_problems:
            raise ConfigError("this run has no validation problems (set val_every > 0 and "
                              "n_val_problems)")
        n = n_samples or cfg.val_samples
        counts = evaluate_pass_counts(
            self.policy, self.val_problems, self.scorer, n_samples=n, temperature=cfg.temperature,
            top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            prompts_per_call=cfg.prompts_per_call or None,
            generator=torch.Generator().manual_seed(1_000_003 * (cfg.seed + 1) + self.step))
        return sum(counts) / (n * len(counts))

    # -- two stages
    @property
    def plateau_metrics(self) -> list[str]:
        m = self.cfg.plateau_metric
        return [m] if isinstance(m, str) else list(m)

    def _stage_one_done(self, row: dict) -> bool:
        """Stage 1 ends at a fixed step, or when every watched metric has plateaued (each
        metric's detector counts its own updates: validation only logs every val_every steps),
        or at the stage1_steps cap."""
        cfg = self.cfg
        if cfg.stage1 == "steps":
            return self.step >= cfg.stage1_steps
        for name in self.plateau_metrics:
            if name not in row and name != "val_pass_rate":  # validation: only some steps
                raise ConfigError(f"TrainConfig.plateau_metric={name!r} is not a metric of "
                                  f"this run; metrics are {sorted(row)}")
        fired = _feed_detectors(self.detectors, row)
        return fired or bool(cfg.stage1_steps and self.step >= cfg.stage1_steps)

    def enter_stage_two(self) -> dict:
        """Drop the problems the policy solves n/n (hint-free), then switch nudging on."""
        from nudgelib.nudging import drop_solved

        cfg = self.cfg
        dropped = 0
        if cfg.drop_solved_samples:
            kept, _ = drop_solved(self.policy, self.problems, self.scorer,
                                  n_samples=cfg.drop_solved_samples,
                                  temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_new_tokens=cfg.max_new_tokens, generator=self.sample_rng,
                                  prompts_per_call=cfg.prompts_per_call or None)
            dropped = len(self.problems) - len(kept)
            if kept:  # all solved n/n: nothing left to nudge; keep the set rather than stop
                self.problems = kept
            self.epoch, self.cursor = self.epoch + 1, 0  # a fresh order over the new set
        self.stage, self.stage_switch_step = 2, self.step
        return {"stage_switch": True, "dropped_solved": dropped}

    # -- loop
    def train(self, until_step: int) -> pandas.DataFrame:  # noqa: F821
        """Train until ``self.step == until_step``; returns all metrics rows as a DataFrame."""
        from tqdm.auto import tqdm

        if not isinstance(until_step, int) or until_step < 0:
            raise ConfigError(f"until_step must be an integer >= 0, got {until_step!r}")
        bar = tqdm(total=until_step, initial=self.step, desc=f"train {self.cfg.name}",
                   disable=not self.progress)
        start, saved = self.step, None
        while self.step < until_step:
            row = self.train_step()
            self.rows.append(row)
            self._write_metrics(row)
            for cb in self.callbacks:
                cb(self, row, self.last_batch)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", zero_std=f"{row['frac_zero_std']:.2f}")
            if self.out is not None and (row.get("stage_switch") or (
                    self.cfg.save_every and self.step % self.cfg.save_every == 0)):
                self.save_checkpoint()  # and always at a stage switch: fork or resume from it
                saved = self.step
        bar.close()
        if self.out is not None and self.step > start and saved != self.step:
            self.save_checkpoint()
        return self.metrics

    @property
    def metrics(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    # -- files
    def _write_metrics(self, row: dict) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def checkpoint_dir(self, step: int) -> Path:
        return self.out / CHECKPOINTS / f"step-{step:06d}"

    def save_checkpoint(self) -> Path:
        """Write the full training state for ``self.step``; atomic (temp folder + rename)."""
        if self.out is None:
            raise ConfigError("this Trainer has no out_dir to save checkpoints in")
        final = self.checkpoint_dir(self.step)
        tmp = final.with_name(f".tmp-{final.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.policy.save(tmp / "policy")
        torch.save({
            "step": self.step, "epoch": self.epoch, "cursor": self.cursor,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "sample_rng": self.sample_rng.get_state(), "rng": _rng_state(),
            "nudger": self.nudger.state_dict() if hasattr(self.nudger, "state_dict") else None,
            "stage": self.stage, "stage_switch_step": self.stage_switch_step,
            "detectors": {m: d.state_dict() for m, d in self.detectors.items()},
            "problem_ids": [p.id for p in self.problems],
            "elapsed": time.time() - self._t0,
        }, tmp / "trainer_state.pt")
        (tmp / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))
        (tmp / _COMPLETE).write_text(f"step {self.step}\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        self._prune_checkpoints()
        return final

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.keep_checkpoints
        if not keep:
            return
        done = complete_checkpoints(self.out)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | os.PathLike, *, fork: bool = False) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; metrics rows after it are dropped.
        ``fork=True``: the checkpoint is another run's (see :meth:`fork_from`)."""
        path = Path(path)
        if not (path / _COMPLETE).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {_COMPLETE} file)")
        saved = TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
        diff = {k for k, v in saved.to_dict().items()
                if self.cfg.to_dict()[k] != v} - (_FORK_CHANGES if fork else _RESUMABLE_CHANGES)
        if diff:
            what = "fork from" if fork else "resume"
            raise ConfigError(f"cannot {what} {path}: the checkpoint was made with a different "
                              "config for " + ", ".join(
                                  f"{k} (checkpoint {saved.to_dict()[k]!r}, now "
                                  f"{self.cfg.to_dict()[k]!r})" for k in sorted(diff)))
        self.policy.load(path / "policy")
        st = torch.load(path / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step, self.epoch, self.cursor = st["step"], st["epoch"], st["cursor"]
        self.sample_rng.set_state(st["sample_rng"])
        _set_rng_state(st["rng"])
        if fork:
            self._load_problem_ids(st)
            self._take_metrics(path.parent.parent / METRICS_FILE, forked_from=str(path))
            return
        if st.get("nudger") is not None and hasattr(self.nudger, "load_state_dict"):
            self.nudger.load_state_dict(st["nudger"])
        self.stage = st.get("stage", self.stage)
        self.stage_switch_step = st.get("stage_switch_step")
        saved_detectors = st.get("detectors") or (
            {self.plateau_metrics[0]: st["detector"]} if st.get("detector") else {})
        for m, state in saved_detectors.items():
            if m in self.detectors:
                self.detectors[m].load_state_dict(state)
        self._load_problem_ids(st)
        self._t0 = time.time() - st.get("elapsed", 0.0)
        if self.out is not None:
            self._take_metrics(self.out / METRICS_FILE)

    def _load_problem_ids(self, st: dict) -> None:
        if "problem_ids" in st:
            by_id = {p.id: p for p in self.all_problems}
            missing = [i for i in st["problem_ids"] if i not in by_id]
            if missing:
                raise ConfigError(f"cannot resume: checkpoint problems {missing[:3]} are not in "
                                  f"this run's training set")
            self.problems = [by_id[i] for i in st["problem_ids"]]

    def _take_metrics(self, source: Path, forked_from: str | None = None) -> None:
        """Keep the rows of ``source`` up to the loaded step as this run's history (and its
        metrics file, when it has an out_dir)."""
        kept = []
        if source.is_file():
            for line in source.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the kill
                if r.get("step", 0) <= self.step:
                    kept.append({**r, "forked_from": forked_from} if forked_from else r)
        self.rows = kept
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / (METRICS_FILE + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.out / METRICS_FILE)

    def fork_from(self, checkpoint: str | os.PathLike) -> dict:
        """Start this run from another run's checkpoint: NuRL from the GRPO checkpoint at its
        plateau (METHOD.md 2.4). The policy, optimizer, scheduler, step, RNG states and data
        order are taken over; only what happens from now on may differ from the source's
        config (nudging, stages, validation). The source's metrics up to that step become this
        run's history. With nudging on, stage 2 begins at once: the problems solved n/n are
        dropped and hints switch on. Returns what happened (also saved as ``fork.json``)."""
        path = Path(checkpoint)
        self.load_checkpoint(path, fork=True)
        info = {"forked_from": str(path), "step": self.step}
        self.stage, self.stage_switch_step = 1, None
        if self.nudger is not None:
            info.update(self.enter_stage_two())
        if self.out is not None:
            (self.out / FORK_FILE).write_text(json.dumps(info, indent=1))
        self.fork_info = info
        return info

    def export_adapter(self, path: str | os.PathLike | None = None) -> Path:
        """Save the current policy (a standard PEFT adapter for LoRA policies) to ``path``
        (default ``out/adapter``), atomically, with the run's config beside it."""
        if path is None:
            if self.out is None:
                raise ConfigError("export_adapter needs a path: this Trainer has no out_dir")
            path = self.out / ADAPTER
        path = Path(path)
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.policy.save(tmp)
        (tmp / "nudgelib_config.json").write_text(json.dumps(
            {**self.cfg.to_dict(), "step": self.step}, indent=1))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        return path


RUN_DIR_ENV = "NUDGE_RUN_DIR"
COLAB_DRIVE = Path("/content/drive/MyDrive")


def default_run_root() -> Path:
    """Where notebooks keep their runs: ``$NUDGE_RUN_DIR``; else, on Colab with Google Drive
    mounted, ``MyDrive/nudgelib-runs`` (runs survive a disconnect); else ``runs/`` under the
    nudgelib cache folder (``$NUDGE_CACHE_DIR``, default ``~/.cache/nudgelib``)."""
    from nudgelib.models import cache_dir

    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]).expanduser()
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "nudgelib-runs"
    return cache_dir() / "runs"


def _feed_detectors(detectors: dict[str, PlateauDetector], row: dict) -> bool:
    """Update each metric's detector with the row's value (a metric the step did not measure,
    None or absent, is skipped); True when every metric has plateaued."""
    for name, det in detectors.items():
        if row.get(name) is not None:
            det.update(row[name])
    return all(d.values and d.since_best >= d.patience for d in detectors.values())


def resume_or_start(cfg: TrainConfig, out_dir: str | os.PathLike, **kwargs) -> Trainer:
    """A Trainer for ``out_dir`` that continues from its last complete checkpoint if it has
    one (after a crash or a Colab disconnect: re-run the same cell), else a fresh one.
    ``kwargs`` go to :class:`Trainer`."""
    ckpts = complete_checkpoints(out_dir)
    trainer = Trainer(cfg, out_dir, warm=not ckpts, **kwargs)
    if ckpts:
        trainer.load_checkpoint(ckpts[-1])
    elif (Path(out_dir) / METRICS_FILE).exists():
        (Path(out_dir) / METRICS_FILE).unlink()  # killed before its first checkpoint
    return trainer


def find_plateau(rows: Sequence[dict], metrics: str | Sequence[str] = "reward_mean", *,
                 patience: int = 10, window: int = 5, min_delta: float = 0.0,
                 max_step: int = 0) -> int | None:
    """The first step of ``rows`` (a run's metrics) at which every metric in ``metrics`` has
    plateaued, by the same rule as a two-stage run (:class:`PlateauDetector`, each metric
    counting only the steps that logged it); else ``max_step`` if the rows reach it; else None.
    Use it to choose the GRPO checkpoint that NuRL starts from."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    dets = {m: PlateauDetector(patience, window=window, min_delta=min_delta) for m in names}
    for r in sorted(rows, key=lambda r: r["step"]):
        if _feed_detectors(dets, r):
            return r["step"]
        if max_step and r["step"] >= max_step:
            return r["step"]
    return None


def stage_configs(cfg: TrainConfig, nudging: str = "nurl",
                  **nurl_overrides) -> tuple[TrainConfig, TrainConfig]:
    """The two runs of the pipeline from one config: plain GRPO with a checkpoint at every step
    (any of them may become the fork point), and the nudged run forked from it (one stage:
    nudging from the fork on; checkpoints every step so a disconnect loses at most one)."""
    grpo = cfg.with_overrides(nudging="none", stage1="none", save_every=1, keep_checkpoints=0)
    nurl = cfg.with_overrides(nudging=nudging, stage1="none", save_every=1, **nurl_overrides)
    return grpo, nurl


def resume_or_fork(cfg: TrainConfig, out_dir: str | os.PathLike,
                   checkpoint: str | os.PathLike, **kwargs) -> Trainer:
    """A Trainer for ``out_dir`` that continues its own last checkpoint if it has one, else
    starts by forking from ``checkpoint`` (:meth:`Trainer.fork_from`; ``trainer.fork_info``
    says what the fork did). ``kwargs`` go to :class:`Trainer`."""
    if complete_checkpoints(out_dir):
        return resume_or_start(cfg, out_dir, **kwargs)
    trainer = Trainer(cfg, out_dir, warm=False, **kwargs)
    trainer.fork_from(checkpoint)
    return trainer


def grpo_then_nurl(cfg: TrainConfig, root: str | os.PathLike, *, steps: int,
                   switch_metrics: str | Sequence[str] = "reward_mean", max_switch_step: int = 0,
                   nudging: str = "nurl", nurl_overrides: dict | None = None,
                   callbacks: Sequence[Callable] = (), progress: bool = False) -> dict:
    """The paper's pipeline in two runs under ``root``: ``grpo/`` trains plain GRPO for
    ``steps`` steps (a checkpoint every step, resumable); the GRPO checkpoint at its plateau
    (:func:`find_plateau` over ``switch_metrics`` with the config's patience/window, capped at
    ``max_switch_step``) is forked into ``nurl/``, which trains with ``nudging`` up to the same
    ``steps``. Both export their final adapter (``grpo/adapter``, ``nurl/adapter``). A run that
    is already there resumes. Returns ``{"grpo": trainer, "nurl": trainer, "switch_step": s}``.
    """
    root = Path(root)
    grpo_cfg, nurl_cfg = stage_configs(cfg, nudging, **(nurl_overrides or {}))
    grpo = resume_or_start(grpo_cfg, root / "grpo", callbacks=callbacks, progress=progress)
    grpo.train(until_step=steps)
    grpo.export_adapter()
    s = find_plateau(grpo.rows, switch_metrics, patience=cfg.plateau_patience,
                     window=cfg.plateau_window, min_delta=cfg.plateau_min_delta,
                     max_step=max_switch_step or steps)
    nurl = resume_or_fork(nurl_cfg, root / "nurl", grpo.checkpoint_dir(s), callbacks=callbacks,
                          progress=progress)
    nurl.train(until_step=steps)
    nurl.export_adapter()
    return {"grpo": grpo, "nurl": nurl, "switch_step": s}


PIPELINE_PLANS = {
    # preset: (steps, max switch step, validate every, validation problems x samples)
    "cpu-fast": (3, 2, 1, (4, 2)),
    "cpu": (60, 40, 5, (32, 4)),
    "colab-t4": (200, 120, 10, (64, 4)),
    "large-gpu": (400, 200, 10, (128, 8)),
}


def pipeline_plan(preset_name: str) -> dict:
    """The GRPO -> NuRL run of notebooks 06/07 for a preset: its TrainConfig (validation on,
    plateau watched on training reward and validation pass rate), the number of steps, and the
    latest step at which NuRL takes over if GRPO has not plateaued by then."""
    if preset_name not in PIPELINE_PLANS:
        raise ConfigError(f"no pipeline plan for preset {preset_name!r}; expected one of "
                          f"{sorted(PIPELINE_PLANS)}")
    steps, cap, every, (n_val, k_val) = PIPELINE_PLANS[preset_name]
    fast = preset_name == "cpu-fast"
    cfg = get_train_config(preset_name, val_every=every, n_val_problems=n_val, val_samples=k_val,
                           **({"n_train_problems": 8, "drop_solved_samples": 4} if fast else {}))
    return {"config": cfg, "steps": steps, "max_switch_step": cap,
            "switch_metrics": ["reward_mean", "val_pass_rate"]}


def complete_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.name.startswith("step-") and (p / _COMPLETE).is_file())


# ----------------------------------------------------------------------------- CLI

def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_args(args) -> TrainConfig:
    src = args.config
    if src.endswith(".json") or os.path.sep in src:
        p = Path(src)
        if not p.is_file():
            raise ConfigError(f"--config {src!r}: no such file (or use a preset: "
                              f"{', '.join(TRAIN_PRESETS)})")
        try:
            cfg = TrainConfig.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config {src!r} is not valid JSON: {err}") from None
    else:
        cfg = get_train_config(src)
    changes = {}
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        changes[k.strip()] = _parse_value(v)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.save_every is not None:
        changes["save_every"] = args.save_every
    if getattr(args, "nudging", None) is not None:
        changes["nudging"] = args.nudging
    if getattr(args, "hint_bank", None) is not None:
        changes["hint_bank"] = args.hint_bank
    return cfg.with_overrides(**changes) if changes else cfg


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True,
                    help=f"a preset ({', '.join(TRAIN_PRESETS)}) or a JSON file of TrainConfig fields")
    ap.add_argument("--steps", type=int, required=True, help="train until this step")
    ap.add_argument("--out", required=True, help="run folder: metrics.jsonl, checkpoints/")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--save-every", type=int, help="checkpoint every K steps (default: at the end)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    ap.add_argument("--nudging", choices=sorted(STRATEGIES),
                    help="nudging strategy (default: the config's; see nudgelib.nudging)")
    ap.add_argument("--hint-bank", help="a saved HintBank folder (default: built-in toy hints, "
                                        "or self-generated hints for real tasks)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config field (value parsed as JSON when it can be)")
    ap.add_argument("--fork-from", metavar="CHECKPOINT",
                    help="start from another run's checkpoint (e.g. NuRL from a GRPO run's "
                         "step-NNNNNN folder); the config may differ in nudging/stage fields")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {args.steps}")
        out = Path(args.out)
        ckpts = complete_checkpoints(out)
        if not args.resume and ((out / METRICS_FILE).exists() or ckpts):
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or "
                              f"choose another --out")
        if args.resume:
            trainer = resume_or_start(cfg, out, progress=not args.quiet)
            if ckpts:
                print(f"resumed from {ckpts[-1]} (step {trainer.step})", flush=True)
        else:
            trainer = Trainer(cfg, out, progress=not args.quiet, warm=not args.fork_from)
            if args.fork_from:
                info = trainer.fork_from(args.fork_from)
                print(f"forked from {args.fork_from}: {json.dumps(info)}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        trainer.train(until_step=args.steps)
        adapter = trainer.export_adapter()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    last = trainer.rows[-1] if trainer.rows else {}
    print(json.dumps({"step": trainer.step, "out": str(out), "adapter": str(adapter),
                      **{k: last.get(k) for k in ("reward_mean", "pass_rate", "frac_zero_std",
                                                  "frac_nudged", "stage")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
