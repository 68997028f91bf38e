"""Training configuration: the fields of a run, their validation, the presets, and the builders
that turn a config into problems, a policy, a scorer, hints and a nudging strategy.

    cfg = get_train_config("toy-fast", seed=0)          # a preset (TRAIN_PRESETS) ...
    cfg = cfg.with_overrides(nudging="nurl", lr=1e-4)  # ... with fields changed (validated)
    problems, policy = build_problems(cfg), build_policy(cfg)

Every invalid value raises :class:`ConfigError`, whose message names the field, the value and
what is expected. The trainer (:mod:`nudgelib.train`), the two-stage pipeline
(:mod:`nudgelib.pipeline`) and the TRL integration (:mod:`nudgelib.integrations.trl`) all read
their settings from a :class:`TrainConfig`.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from nudgelib.advantages import ESTIMATORS
from nudgelib.hints import HINT_TYPES
from nudgelib.losses import AGGREGATIONS, KL_ESTIMATORS, SURROGATES
from nudgelib.nudging import CONDITION_ON, STRATEGIES, Nudger, make_strategy
from nudgelib.policies import SAMPLERS, lm_switch_defaults
from nudgelib.problems import Problem
from nudgelib.rollouts import ExactMatchScorer, MathScorer

POLICIES = ("char-transformer", "toy-table", "hf")
TASKS = ("addition", "toy-table", "arithmetic", "gsm8k", "math500")
HINT_SOURCES = ("auto", "self", "reference")

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
    stop_at_newline: bool = False  # LM: a completion ends at its first newline (short answers)
    prompts_per_call: int = 0  # 0: all prompts of a step in one sampling call
    # --- switches that change which tokens are drawn or how numbers are computed; left
    # unset they are resolved on creation by policy (resolve_switches) and recorded resolved
    sampler: str = ""  # hf, char-transformer: "race" | "cdf"; toy-table: "multinomial"
    fast_decode: bool | None = None  # hf: the lean CPU decode loop (nudgelib.decode)
    pack_weights: bool | None = None  # hf: oneDNN-packed frozen CPU weights
    # --- RL objective (docs/method.md §4)
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
    # --- nudging (docs/method.md §2–3; nudgelib.nudging)
    nudging: str = "none"  # none | nurl | scaf | nudgerl | always
    hint_type: str = "abstract"  # nurl / always: which hints of the bank
    condition_on: str = "hinted"  # nurl / scaf: prompt a hinted rollout is scored under
    hint_bank: str = ""  # a saved HintBank; "": hints from hint_source
    hint_source: str = "auto"  # no hint_bank: "self" (the policy writes them before training,
    #   saved to out/hint_bank), "reference" (teacher hints from the problems' worked
    #   solutions), "auto" (toy tasks: built-in; arithmetic: reference; gsm8k/math500: self)
    nudging_options: dict = field(default_factory=dict)  # strategy keyword arguments
    hint_explanation_tokens: int = 192  # self-hints: budget of call 1 (the explanation)
    hint_tokens: int = 64  # self-hints: budget of call 2 (the hint)
    warm_start_hints: float = 0.25  # char model: share of warm-start sums also shown hinted
    # --- two stages (docs/method.md §2.4): stage 1 plain GRPO, then nudging
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

        resolve_switches(self)

        for name, choices in (("policy", POLICIES), ("task", TASKS),
                              ("problem_selection", ("random", "shortest")),
                              ("estimator", tuple(ESTIMATORS)), ("surrogate", tuple(SURROGATES)),
                              ("aggregation", AGGREGATIONS), ("kl_estimator", KL_ESTIMATORS),
                              ("nudging", tuple(STRATEGIES)), ("hint_type", HINT_TYPES),
                              ("condition_on", CONDITION_ON), ("hint_source", HINT_SOURCES),
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
        def number(v) -> bool:  # true/false are not numbers here, whatever Python says
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("lr", "temperature", "max_grad_norm"):
            if not number(getattr(self, name)) or getattr(self, name) <= 0:
                bad(name, "a finite number > 0")
        for name in ("kl_beta", "weight_decay", "format_weight", "overlong_weight", "eps_low",
                     "eps_high", "lora_dropout", "plateau_min_delta"):
            if not number(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "a finite number >= 0")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
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
        import inspect

        for name, fn, skip in (("estimator_options", ESTIMATORS[self.estimator], 2),
                               ("nudging_options", STRATEGIES[self.nudging], 1)):
            params = inspect.signature(fn).parameters  # checked now, not at step 1
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                known = list(params)[skip:]
                unknown = sorted(set(getattr(self, name)) - set(known))
                if unknown:
                    bad(name, f"keyword arguments of {getattr(fn, '__name__', fn)}: "
                              f"{known or 'none'} (unknown: {unknown})")
        if not number(self.warm_start_hints) or not 0 <= self.warm_start_hints <= 1:
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
        if self.policy != "hf" and self.task in ("arithmetic", "gsm8k", "math500"):
            bad("task", f"a toy task for policy={self.policy!r} (real math needs policy='hf')")
        if self.policy == "char-transformer" and self.task != "addition":
            bad("task", "'addition' for policy='char-transformer'")
        if STRATEGIES[self.nudging].sets_advantages and self.stage1 == "none" and (
                self.estimator != "grpo" or self.estimator_options):
            bad("estimator", f"'grpo' (the default) with no estimator_options when "
                             f"nudging={self.nudging!r}: that strategy computes its own "
                             f"advantages, so an estimator would be ignored (with stage1 set, "
                             f"the estimator serves stage 1 and is allowed)")
        if self.task == "arithmetic":
            from nudgelib.arithmetic import TIERS

            unknown = sorted(set(self.difficulty_counts) - set(TIERS))
            if unknown or not any(self.difficulty_counts.values()):
                bad("difficulty_counts", f"a dict {{tier: count}} over the arithmetic tiers "
                                         f"{list(TIERS)} with at least one count > 0")
        if self.hint_source == "reference" and self.task not in ("arithmetic", "gsm8k",
                                                                 "math500"):
            bad("hint_source", "'auto' or 'self' for toy tasks (their problems carry no worked "
                               "solutions)")
        if not isinstance(self.stop_at_newline, bool):
            bad("stop_at_newline", "True or False")
        if self.stop_at_newline and self.policy != "hf":
            bad("stop_at_newline", "False for toy policies (their answers have no lines)")
        if self.surrogate == "gspo" and self.aggregation != "seq_mean_token_mean":
            raise ConfigError(
                f"TrainConfig.surrogate='gspo' with aggregation={self.aggregation!r}: GSPO is "
                f"defined with a per-sequence mean (aggregation='seq_mean_token_mean'); a "
                f"token-weighted aggregation makes it a different, length-weighted objective. "
                f"Set aggregation='seq_mean_token_mean' (docs/method.md §4.2)")
        if self.estimator == "bnpo" and (self.format_weight or self.overlong_weight):
            raise ConfigError(
                f"TrainConfig.estimator='bnpo' with format_weight={self.format_weight} / "
                f"overlong_weight={self.overlong_weight}: BNPO's group mean must be a success "
                f"rate, so it needs binary 0/1 rewards; set both weights to 0 or choose "
                f"another estimator")
        if self.kl_beta > 0 and self.policy != "hf":
            bad("kl_beta", "0 for toy policies (the KL reference is the LoRA base model)")
        allowed = ("multinomial",) if self.policy == "toy-table" else SAMPLERS
        if self.sampler not in allowed:
            bad("sampler", f"one of {list(allowed)} for policy={self.policy!r}")
        for name in ("fast_decode", "pack_weights"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True or False")
            if getattr(self, name) and self.policy != "hf":
                bad(name, "False for toy policies (a switch of the language-model policy)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a TrainConfig is a JSON object of fields, got {type(d).__name__}")
        reject_unknown_fields(cls, d, ConfigError)
        defaults = {f.name: f.default for f in fields(cls)}
        for k, v in d.items():  # JSON null where the field is not optional
            if v is None and defaults.get(k) is not None:
                raise ConfigError(f"TrainConfig.{k}=null is invalid; expected a value like its "
                                  f"default {defaults[k]!r}")
        return cls(**d)

    def with_overrides(self, **changes) -> TrainConfig:
        d = self.to_dict()
        if changes.get("policy", self.policy) != self.policy:  # resolved again for the new one
            d.update((k, v) for k, v in UNRESOLVED_SWITCHES.items() if k not in changes)
        return TrainConfig.from_dict({**d, **changes})

    def sampling(self) -> dict:
        """The resolved switches that decide sampled tokens and numerics (results files)."""
        return {k: getattr(self, k) for k in UNRESOLVED_SWITCHES}


UNRESOLVED_SWITCHES = {"sampler": "", "fast_decode": None, "pack_weights": None}
"""TrainConfig's switch fields and the value that means "resolve by policy"."""


def resolve_switches(cfg: TrainConfig) -> None:
    """Fill the unset switches of ``cfg`` in place: for ``policy="hf"`` the language-model
    defaults (:func:`nudgelib.policies.lm_switch_defaults`: ``race``, on, on, or what the
    environment variables ``NUDGE_SAMPLER``, ``NUDGE_FAST_DECODE``, ``NUDGE_PACK_WEIGHTS``
    say); the char transformer draws by inverse CDF (``cdf``), the toy table by
    ``multinomial``; the lean loop and packing are off for toy policies."""
    if cfg.policy == "hf":
        try:
            defaults = lm_switch_defaults()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    else:
        defaults = {"sampler": "multinomial" if cfg.policy == "toy-table" else "cdf",
                    "fast_decode": False, "pack_weights": False}
    for k, unset in UNRESOLVED_SWITCHES.items():
        if getattr(cfg, k) in (None, ""):
            setattr(cfg, k, defaults[k])


SHORT_ANSWER_INSTRUCTION = "Answer with the final number in \\boxed{}."
"""An instruction for a small model on GSM8K with a short budget: asked for the number alone,
some of SmolLM2-135M's completions end in time (the benchmarks use it)."""

CPU_ARITHMETIC = {  # preset (Preset.task == "arithmetic"): training problems per tier
    "cpu-fast": {"sum": 8, "product": 8, "chain": 8},
    "cpu": {"sum": 24, "product": 24, "chain": 32},
}
"""The CPU presets train on short-answer arithmetic (:mod:`nudgelib.arithmetic`): SmolLM2-135M
cannot do GSM8K, but its pass rates on these tiers go from learnable to 0/G. Settings chosen
from measured runs (README, "A real model learning on CPU"): G = 8, 8 prompts per step, lr 3e-4,
teacher partial-step hints for the hard tier; 12 new tokens and a stop at the first newline: the
longest answer line of the default tiers, "3 + 6 + 8 = 17", is 11 tokens (with 10, the first
design, it was cut to "= 1"), and nothing after the answer line is sampled."""


def _lm_config(preset_name: str) -> TrainConfig:
    from nudgelib.presets import PRESETS

    p = PRESETS[preset_name]
    common = dict(name=preset_name, policy="hf", model_id=p.model_id, group_size=p.group_size,
                  prompts_per_step=p.prompts_per_step, max_new_tokens=p.max_new_tokens,
                  load_in_4bit=p.load_in_4bit, dtype=p.dtype, device=p.device)
    if p.task == "arithmetic":
        from nudgelib.arithmetic import INSTRUCTION

        counts = CPU_ARITHMETIC[preset_name]
        return TrainConfig(**common, task="arithmetic", difficulty_counts=dict(counts),
                           stop_at_newline=True,
                           n_train_problems=sum(counts.values()), lora_rank=p.lora_rank, lr=3e-4,
                           instruction=INSTRUCTION, hint_type="partial_steps",
                           micro_batch_size=64, hint_explanation_tokens=48, hint_tokens=24)
    return TrainConfig(
        **common, task="gsm8k", n_train_problems=p.n_train_problems,
        problem_selection="random", lr=2e-5, lora_rank=p.lora_rank,
        gradient_checkpointing=p.device == "cuda", micro_batch_size=16,
        format_weight=0.1, overlong_weight=1.0, warmup_steps=5)


def get_train_config(name: str, **overrides) -> TrainConfig:
    """A named training preset, optionally with field overrides.

    * ``toy-fast`` — tiny char transformer on addition (1-3 digits), seconds per step on CPU;
    * ``toy-table`` — the categorical toy of :mod:`nudgelib.toy`;
    * ``cpu-fast``, ``cpu`` — LoRA on SmolLM2-135M and short-answer arithmetic
      (:data:`CPU_ARITHMETIC`);
    * ``colab-t4``, ``large-gpu`` — LoRA on a real LM and GSM8K, sized by
      :data:`nudgelib.presets.PRESETS`.
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
    if cfg.task == "arithmetic":
        return _arithmetic(cfg.difficulty_counts, "train", cfg.seed)
    return _ordered_pool(cfg)[:cfg.n_train_problems]


def _arithmetic(counts, split, seed):
    from nudgelib.arithmetic import arithmetic_problems

    try:
        return arithmetic_problems(counts, split=split, seed=seed)
    except ValueError as err:
        raise ConfigError(f"TrainConfig.difficulty_counts: {err}") from None


def _split_evenly(n: int, keys: Sequence[str]) -> dict[str, int]:
    return {k: n // len(keys) + (i < n % len(keys)) for i, k in enumerate(keys)}


def build_val_problems(cfg: TrainConfig) -> list[Problem]:
    """Held-out validation problems, never trained on: for real math, the ``n_val_problems``
    that follow the training problems in the same order of the training split; for addition,
    fresh sums of the same difficulties that are not training questions; for arithmetic,
    problems of the training tiers from the held-out split (disjoint by construction)."""
    levels = [k for k, v in cfg.difficulty_counts.items() if v]
    if cfg.task == "arithmetic":
        return _arithmetic(_split_evenly(cfg.n_val_problems, levels), "heldout", cfg.seed)
    if cfg.task == "addition":
        from nudgelib.toy import ADDITION_DIGITS, addition_problems

        seen = {p.question for p in build_problems(cfg)}
        counts = _split_evenly(cfg.n_val_problems, levels)
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
            seed=cfg.seed, sampler=cfg.sampler)
        if warm and cfg.warm_start_steps:
            warm_start(pol, warm_start_pairs(cfg), steps=cfg.warm_start_steps, seed=cfg.seed,
                       progress=progress)
        return pol
    if cfg.policy == "toy-table":
        from nudgelib.policies import CategoricalPolicy
        from nudgelib.toy import ToyPolicy, ToyTask

        task = ToyTask.make(cfg.difficulty_counts, seed=cfg.seed)
        return CategoricalPolicy(ToyPolicy(task, max_len=cfg.max_new_tokens))
    from nudgelib.lm_policy import HFPolicy

    torch.manual_seed(cfg.seed)  # LoRA's A matrices are initialised from the global RNG
    return HFPolicy.from_pretrained(
        cfg.model_id, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha or None,
        lora_dropout=cfg.lora_dropout, load_in_4bit=cfg.load_in_4bit, dtype=cfg.dtype or None,
        device=cfg.device or None, gradient_checkpointing=cfg.gradient_checkpointing,
        instruction=cfg.instruction, stop_at_newline=cfg.stop_at_newline, sampler=cfg.sampler,
        fast_decode=cfg.fast_decode, pack_weights=cfg.pack_weights)


def build_scorer(cfg: TrainConfig):
    if cfg.task in ("addition", "toy-table"):
        return ExactMatchScorer()
    strategies = None
    if cfg.task == "arithmetic":
        from nudgelib.arithmetic import SCORING as strategies
    return MathScorer(format_weight=cfg.format_weight, overlong_weight=cfg.overlong_weight,
                      max_len=cfg.max_new_tokens if cfg.overlong_weight else None,
                      strategies=strategies)


def hint_source_of(cfg: TrainConfig) -> str:
    """Where the hints of a run come from when no bank is given: ``builtin`` (toy tasks),
    ``reference`` or ``self`` (see ``TrainConfig.hint_source``)."""
    if cfg.hint_source != "auto":
        return cfg.hint_source
    return {"addition": "builtin", "toy-table": "builtin", "arithmetic": "reference"}.get(
        cfg.task, "self")


def build_hints(cfg: TrainConfig, hint_types: Sequence[str], problems: Sequence[Problem], policy,
                out: Path | None = None, *, progress: bool = False):
    """The hints nudging uses: a saved bank (``cfg.hint_bank``), the built-in toy hints, teacher
    hints from the problems' worked solutions (``reference``), or self-generated hints of
    ``hint_types`` written by ``policy`` before any training (NuRL's offline step); the last
    two are saved to ``out/hint_bank`` and reused when the run resumes."""
    from nudgelib.hints import CONTEXT_TYPES, HintBank, generate_hints, reference_hints
    from nudgelib.toy import toy_hint

    if cfg.hint_bank:
        path = Path(cfg.hint_bank)
        if not path.exists():
            raise ConfigError(f"TrainConfig.hint_bank={cfg.hint_bank!r}: no such folder (save a "
                              f"bank with HintBank.save or dataset.save_to_disk)")
        return _rechecked(HintBank.load(path), problems, path)
    source = hint_source_of(cfg)
    if source == "builtin":
        return toy_hint
    if source == "reference" and "abstract" in hint_types:
        raise ConfigError("TrainConfig.hint_type='abstract' needs hint_source='self' (an "
                          "abstract hint needs a model; worked solutions give partial_steps, "
                          "explanation or answer hints)")
    saved = out / "hint_bank" if out is not None else None
    if saved is not None and saved.exists():
        from nudgelib.runs import MANIFEST, verify_folder

        problem = verify_folder(saved)  # saved with a manifest; an older bank has none
        if problem is None or not (saved / MANIFEST).exists():
            try:
                return _rechecked(HintBank.load(saved), problems, saved)
            except Exception as err:  # noqa: BLE001 (a half-written bank: make it again)
                problem = f"cannot be loaded ({type(err).__name__}: {err})"
        warnings.warn(f"{saved}: {problem}; the hints are made again", stacklevel=2)

    def written(kind):  # answer-free contexts are the policy's own even with reference hints
        if source == "reference" and kind not in CONTEXT_TYPES:
            return reference_hints(problems, kind)
        seed = cfg.seed + 17 + CONTEXT_TYPES[1:].count(kind)  # the 2nd context: another draw
        return generate_hints(policy, problems, kind, source="self", progress=progress,
                              max_explanation_tokens=cfg.hint_explanation_tokens,
                              max_hint_tokens=cfg.hint_tokens,
                              generator=torch.Generator().manual_seed(seed))

    banks = [written(kind) for kind in hint_types]
    bank = HintBank.merge(banks)
    bank.stats = {kind: b.stats for kind, b in zip(hint_types, banks)}
    if saved is not None:  # temp folder, manifest, rename: a kill leaves no half bank
        from nudgelib.runs import save_folder_atomic

        saved.parent.mkdir(parents=True, exist_ok=True)
        save_folder_atomic(saved, bank.save)
    return bank


def _rechecked(bank, problems, where):
    """A loaded bank, its hints checked against these problems' gold answers once more."""
    flagged = bank.recheck_leaks(problems)
    if flagged:
        warnings.warn(f"{where}: {flagged} hint(s) leak their problem's gold answer although "
                      f"the bank did not say so; they are flagged and not served", stacklevel=3)
    return bank


def build_nudger(cfg: TrainConfig, hints=None) -> Nudger | None:
    """The strategy ``cfg.nudging`` names, with the config's hint options (None for 'none').
    Without ``hints``, attach them later with ``use_hints`` (its ``hint_types`` say which)."""
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


# ----------------------------------------------------------------------------- CLI values

def parse_value(raw: str):
    """A ``--set key=value`` value: JSON when it parses (numbers, lists, dicts), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_args(args) -> TrainConfig:
    """The config that parsed command-line ``args`` name: ``--config`` (a preset or a JSON file
    of fields), then ``--set key=value`` overrides and the flags that set one field."""
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
        changes[k.strip()] = parse_value(v)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.save_every is not None:
        changes["save_every"] = args.save_every
    if getattr(args, "nudging", None) is not None:
        changes["nudging"] = args.nudging
    if getattr(args, "hint_bank", None) is not None:
        changes["hint_bank"] = args.hint_bank
    return cfg.with_overrides(**changes) if changes else cfg
