"""Training configuration: the fields of a run and their validation.

    cfg = get_train_config("toy-fast", seed=0)          # a preset (TRAIN_PRESETS) ...
    cfg = cfg.with_overrides(nudging="nurl", lr=1e-4)  # ... with fields changed (validated)

Every invalid value raises :class:`ConfigError`, whose message names the field, the value and
what is expected. The builders (:mod:`nudgelib.training.build`) turn a config into problems, a
policy, a scorer, hints and a strategy; the trainer (:mod:`nudgelib.training.trainer`), the
two-stage pipeline (:mod:`nudgelib.training.pipeline`) and the TRL integration
(:mod:`nudgelib.integrations.trl`) all read their settings from a :class:`TrainConfig`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from dataclasses import asdict, dataclass, field, fields

from nudgelib.core.advantages import ESTIMATORS
from nudgelib.core.checks import check_fields, reject_unknown_fields
from nudgelib.core.losses import AGGREGATIONS, KL_ESTIMATORS, SURROGATES
from nudgelib.hints.bank import HINT_TYPES
from nudgelib.nudging import CONDITION_ON, STRATEGIES
from nudgelib.policies.base import SAMPLERS, lm_switch_defaults
from nudgelib.presets import TRAIN_PRESETS
from nudgelib.tasks.arithmetic import TIERS, split_pool

POLICIES = ("char-transformer", "toy-table", "hf")
TASKS = ("addition", "toy-table", "arithmetic", "gsm8k", "math500")
HINT_SOURCES = ("auto", "self", "reference")

MAX_GROUP_SIZE = 4096
MAX_ROWS_PER_STEP = 262_144
"""Bounds on a step's size, checked before anything runs: every row of a step is sampled and
kept in memory (a group of 10**6 would allocate until the allocator fails)."""


@functools.cache
def _train_pool_size(tier: str) -> int:
    return len(split_pool(tier, "train"))


class ConfigError(ValueError):
    """A training configuration value is invalid; the message names the field."""


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
    fast_decode: bool | None = None  # hf: the lean CPU decode loop (nudgelib.policies.decode)
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

        check_fields(
            self, ConfigError,
            choices={"policy": POLICIES, "task": TASKS,
                     "problem_selection": ("random", "shortest"), "estimator": tuple(ESTIMATORS),
                     "surrogate": tuple(SURROGATES), "aggregation": AGGREGATIONS,
                     "kl_estimator": KL_ESTIMATORS, "nudging": tuple(STRATEGIES),
                     "hint_type": HINT_TYPES, "condition_on": CONDITION_ON,
                     "hint_source": HINT_SOURCES, "stage1": ("none", "plateau", "steps")},
            positive_int=("n_train_problems", "group_size", "prompts_per_step", "max_new_tokens",
                          "ppo_epochs", "micro_batch_size", "char_d_model", "char_layers",
                          "char_heads", "plateau_patience", "plateau_window", "hint_tokens",
                          "hint_explanation_tokens", "n_val_problems", "val_samples"),
            non_negative_int=("warm_start_steps", "warmup_steps", "save_every",
                              "keep_checkpoints", "lora_rank", "lora_alpha", "prompts_per_call",
                              "seed", "stage1_steps", "drop_solved_samples", "val_every"),
            positive=("lr", "temperature", "max_grad_norm"),
            non_negative=("kl_beta", "weight_decay", "format_weight", "overlong_weight",
                          "eps_low", "eps_high", "lora_dropout", "plateau_min_delta"),
            bool=("stop_at_newline", "fast_decode", "pack_weights"))

        def number(v) -> bool:  # true/false are not numbers here, whatever Python says
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not number(self.top_p) or not 0 < self.top_p <= 1:
            bad("top_p", "a number in (0, 1]")
        if self.eps_low >= 1:
            bad("eps_low", "a number in [0, 1)")
        if self.group_size < 2:
            bad("group_size", "at least 2 (group advantages need a group)")
        if not isinstance(self.difficulty_counts, dict) or not all(
                isinstance(v, int) and v >= 0 for v in self.difficulty_counts.values()):
            bad("difficulty_counts", "a dict {difficulty: count >= 0}")
        if isinstance(self.seed, int) and not isinstance(self.seed, bool) and \
                self.seed >= 2 ** 32:
            bad("seed", "an integer in [0, 2**32) (torch, numpy and the derived seeds need it)")
        if not isinstance(self.hint_bank, str):
            bad("hint_bank", "the path of a saved hint bank as a string, or '' for none")
        if isinstance(self.group_size, int) and isinstance(self.prompts_per_step, int) and (
                self.group_size > MAX_GROUP_SIZE
                or self.group_size * self.prompts_per_step > MAX_ROWS_PER_STEP):
            bad("group_size", f"at most {MAX_GROUP_SIZE}, with group_size x prompts_per_step at "
                              f"most {MAX_ROWS_PER_STEP:,} rows per step (got "
                              f"{self.group_size} x {self.prompts_per_step}): a step samples "
                              f"and keeps every row in memory")
        if self.policy == "char-transformer" and isinstance(self.char_d_model, int) and \
                isinstance(self.char_heads, int) and self.char_heads > 0 and \
                self.char_d_model % self.char_heads:
            bad("char_d_model", f"a multiple of char_heads={self.char_heads} (each head gets "
                                f"d_model / heads dimensions), got {self.char_d_model}")
        if self.task == "arithmetic" and isinstance(self.difficulty_counts, dict):
            for tier, n in self.difficulty_counts.items():  # unknown tiers: checked below
                if tier in TIERS and isinstance(n, int) and n > _train_pool_size(tier):
                    bad("difficulty_counts", f"at most {_train_pool_size(tier)} training "
                                             f"problems of tier {tier!r} (got {n})")
        if not isinstance(self.estimator_options, dict):
            bad("estimator_options", "a dict of keyword arguments for the estimator")
        if not isinstance(self.nudging_options, dict):
            bad("nudging_options", "a dict of keyword arguments for the nudging strategy")
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
            unknown = sorted(set(self.difficulty_counts) - set(TIERS))
            if unknown or not any(self.difficulty_counts.values()):
                bad("difficulty_counts", f"a dict {{tier: count}} over the arithmetic tiers "
                                         f"{list(TIERS)} with at least one count > 0")
        if self.hint_source == "reference" and self.task not in ("arithmetic", "gsm8k",
                                                                 "math500"):
            bad("hint_source", "'auto' or 'self' for toy tasks (their problems carry no worked "
                               "solutions)")
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
    defaults (:func:`nudgelib.policies.base.lm_switch_defaults`: ``race``, on, on, or what the
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
    for k in UNRESOLVED_SWITCHES:
        if getattr(cfg, k) in (None, ""):
            setattr(cfg, k, defaults[k])


def get_train_config(name: str, **overrides) -> TrainConfig:
    """A named training preset, optionally with field overrides.

    * ``toy-fast`` — tiny char transformer on addition (1-3 digits), seconds per step on CPU;
    * ``toy-table`` — the categorical toy of :mod:`nudgelib.toy`;
    * ``cpu-fast``, ``cpu`` — LoRA on SmolLM2-135M and short-answer arithmetic
      (``Preset.tier_counts`` of :data:`nudgelib.presets.PRESETS`);
    * ``colab-t4``, ``large-gpu`` — LoRA on a real LM and GSM8K, sized by
      :data:`nudgelib.presets.PRESETS`.

    The fields of each live in one table, :data:`nudgelib.presets.TRAIN_PRESETS`.
    """
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; expected one of "
                          f"{sorted(TRAIN_PRESETS)} or a path to a JSON config file")
    cfg = TrainConfig(**copy.deepcopy(TRAIN_PRESETS[name]))
    return cfg.with_overrides(**overrides) if overrides else cfg
