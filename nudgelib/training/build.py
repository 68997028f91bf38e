"""The builders that turn a :class:`~nudgelib.training.config.TrainConfig` into what a run is
made of: its problems (training and held-out), its policy, its scorer, its hints and its
nudging strategy. Deterministic for a given config.

    problems, policy = build_problems(cfg), build_policy(cfg)
    nudger = build_nudger(cfg)
    nudger.use_hints(build_hints(cfg, nudger.hint_types, problems, policy, out_dir))
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from nudgelib.hints.bank import CONTEXT_TYPES, HINT_TYPES, HintBank, HintBankError
from nudgelib.hints.generate import generate_hints, reference_hints
from nudgelib.nudging import Nudger, make_strategy
from nudgelib.policies.char import CharTransformerConfig, CharTransformerPolicy, warm_start
from nudgelib.policies.hf import HFPolicy
from nudgelib.tasks.addition import ADDITION_DIGITS, addition_hint_text, addition_problems
from nudgelib.tasks.arithmetic import SCORING as ARITHMETIC_SCORING
from nudgelib.tasks.arithmetic import arithmetic_problems
from nudgelib.tasks.problems import Problem, load_problems
from nudgelib.tasks.rewards import ExactMatchScorer, MathScorer
from nudgelib.toy import CategoricalPolicy, ToyPolicy, ToyTask, toy_hint, toy_problems
from nudgelib.training.config import ConfigError, TrainConfig
from nudgelib.training.metrics_file import set_aside


def _ordered_pool(cfg: TrainConfig) -> list[Problem]:
    probs = load_problems(cfg.task, cfg.train_split)
    if cfg.problem_selection == "shortest":
        return sorted(probs, key=lambda p: (len(p.question), p.id))
    order = torch.randperm(len(probs), generator=torch.Generator().manual_seed(cfg.seed))
    return [probs[i] for i in order.tolist()]


def build_problems(cfg: TrainConfig) -> list[Problem]:
    """The training problems the config names (deterministic for a given config)."""
    if cfg.task == "addition":
        return addition_problems(cfg.difficulty_counts, seed=cfg.seed + 1)
    if cfg.task == "toy-table":
        return toy_problems(ToyTask.make(cfg.difficulty_counts, seed=cfg.seed))
    if cfg.task == "arithmetic":
        return _arithmetic(cfg.difficulty_counts, "train", cfg.seed)
    return _ordered_pool(cfg)[:cfg.n_train_problems]


def _arithmetic(counts, split, seed):
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
        pol = CharTransformerPolicy(CharTransformerConfig(
            d_model=cfg.char_d_model, n_layers=cfg.char_layers, n_heads=cfg.char_heads),
            seed=cfg.seed, sampler=cfg.sampler)
        if warm and cfg.warm_start_steps:
            warm_start(pol, warm_start_pairs(cfg), steps=cfg.warm_start_steps, seed=cfg.seed,
                       progress=progress)
        return pol
    if cfg.policy == "toy-table":
        task = ToyTask.make(cfg.difficulty_counts, seed=cfg.seed)
        return CategoricalPolicy(ToyPolicy(task, max_len=cfg.max_new_tokens))
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
    strategies = ARITHMETIC_SCORING if cfg.task == "arithmetic" else None
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
        try:  # the manifest checked when there is one (an older nudgelib saved none)
            return _rechecked(HintBank.load(saved), problems, saved)
        except HintBankError as err:  # damaged: kept aside, never overwritten; made again
            aside = set_aside(saved, "damaged")
            warnings.warn(f"{err}. The bank is set aside as {aside.name} and the hints are "
                          f"made again (the run's checkpoints record which hints it trained "
                          f"with: a resume refuses other ones)", stacklevel=2)

    def written(kind):  # answer-free contexts are the policy's own even with reference hints
        if source == "reference" and kind not in CONTEXT_TYPES:
            return reference_hints(problems, kind)
        seed = cfg.seed + 17 + CONTEXT_TYPES[1:].count(kind)  # the 2nd context: another draw
        return generate_hints(policy, problems, kind, source="self", progress=progress,
                              max_explanation_tokens=cfg.hint_explanation_tokens,
                              max_hint_tokens=cfg.hint_tokens,
                              generator=torch.Generator().manual_seed(seed))

    banks = [written(kind) for kind in hint_types]
    bank = HintBank.merge(banks)  # its statistics by hint type
    if saved is not None:  # temp folder, manifest, rename: a kill leaves no half bank
        saved.parent.mkdir(parents=True, exist_ok=True)
        bank.save(saved)
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
