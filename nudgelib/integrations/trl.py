"""NuRL inside TRL's ``GRPOTrainer``: hint nudging on TRL's own groups, under accelerate.

    from nudgelib.integrations.trl import NudgedGRPOTrainer, grpo_config, trl_dataset

    ds = trl_dataset(problems, instruction=..., hints=bank)   # prompt, answer, hint, ...
    trainer = NudgedGRPOTrainer(model=model, processing_class=tok, args=grpo_config(cfg, out),
                                reward_funcs=[correctness_reward], train_dataset=ds,
                                nudging="nurl", peft_config=lora)
    trainer.train()

TRL samples G completions per prompt and scores them as usual. Before it computes advantages,
:class:`NudgedGRPOTrainer` applies the strategy to those groups (docs/method.md §2.2):

* ``nurl``: a group whose G completions all fail keeps its first completion and has the other
  G-1 regenerated from the prompt with the hint appended to the question; the regenerated rows
  carry the *hinted* prompt ids, so the loss and the log-probs condition on the hinted prompt.
  Groups with a pass, and 0/G groups whose problem has no hint, are left exactly as sampled.
* ``always``: every prompt that has a hint is sampled with it, all G completions (the
  "hints always" ablation).
* ``none``: plain TRL GRPO (the metrics below are still logged).

TRL then scores the final completions with its reward functions and computes the group
advantages over the mixed group, as the paper does. The trigger is decided on the global batch:
a group may be split over processes, so pass flags are gathered first, and every process
regenerates the same number of prompts (padded) so that collective generation backends (vLLM
server, DeepSpeed ZeRO-3) stay in step.

Logged through TRL (``trainer.state.log_history``, TensorBoard, W&B...): ``pass_rate`` (hint-free
pass rate before nudging), ``frac_zero_pass`` (share of 0/G groups), ``frac_nudged`` (share of
groups that were nudged), ``hinted_pass_rate`` (pass rate of the hinted completions, when there
were any) and ``missing_hints`` (0/G groups without a hint). The completions table gets a
``nudge_hint`` column.

Hints come from a dataset column (``hint_column``, default ``"hint"``; empty = no hint) or from
``hints=``: a :class:`nudgelib.hints.bank.HintBank` or a dict keyed by problem id (``id_column``), or a
function ``(row, hint_type) -> str | None``.

The rewards of :mod:`nudgelib.tasks.rewards` are TRL reward functions already; :func:`reward_functions`
builds the same mix as nudgelib's own trainer (correctness + format + DAPO overlong penalty),
and :func:`grpo_config` maps a :class:`nudgelib.training.config.TrainConfig` preset onto ``GRPOConfig``.

Tested with TRL ``>= 1.14.2, != 1.15.0, < 1.17`` (:data:`TRL_TESTED`); the subclass uses TRL's private
generation hooks, so other versions raise a clear error unless ``NUDGE_ALLOW_UNTESTED_TRL=1``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

TRL_TESTED = (">=1.14.2", "!=1.15.0", "<1.17.0")
"""The TRL versions this integration is tested with (``pip install 'nudgelib[trl]'``): 1.14.2 and
1.16.0 pass its tests; 1.15.0 cannot train on a CPU-only PyTorch (its chunked log-prob kernel
needs Triton, which CPU wheels lack)."""
UNTESTED_ENV = "NUDGE_ALLOW_UNTESTED_TRL"
INSTALL_HINT = "pip install 'nudgelib[trl]'  (or: pip install 'trl>=1.14.2,!=1.15.0,<1.17')"


def check_trl(version: str | None = None) -> str:
    """TRL's version, or an ImportError that says what to install.

    ``version`` checks a given version string instead of the installed one (for tests).
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    if version is None:
        try:
            import trl
        except ImportError as err:
            raise ImportError(f"nudgelib.integrations.trl needs TRL, which is not installed: "
                              f"{INSTALL_HINT}") from err
        version = trl.__version__
    spec = SpecifierSet(",".join(TRL_TESTED))
    if Version(version) not in spec:
        msg = (f"nudgelib.integrations.trl is tested with TRL {spec}, found trl {version}; it "
               f"overrides TRL's generation hooks, which change between releases. Install a "
               f"tested version: {INSTALL_HINT}")
        if os.environ.get(UNTESTED_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
            warnings.warn(msg + f" (going on because {UNTESTED_ENV} is set)", stacklevel=2)
        else:
            raise ImportError(msg + f"; or set {UNTESTED_ENV}=1 to try anyway")
    return version


check_trl()

from accelerate.utils import gather  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl.data_utils import is_conversational  # noqa: E402

from nudgelib.core.trigger import nurl_trigger  # noqa: E402
from nudgelib.hints.bank import HintBank, as_hint_source  # noqa: E402
from nudgelib.nudging import STRATEGIES, strategies_for  # noqa: E402
from nudgelib.policies.hf import DEFAULT_INSTRUCTION, default_dtype  # noqa: E402
from nudgelib.rollouts import HINT_TEMPLATE, prompt_text  # noqa: E402
from nudgelib.tasks.rewards import (  # noqa: E402
    make_correctness_reward,
    make_format_reward,
    overlong_penalty,
)
from nudgelib.training.build import build_scorer  # noqa: E402
from nudgelib.training.config import ConfigError  # noqa: E402

TRL_STRATEGIES = strategies_for("trl")
"""The strategies of :data:`nudgelib.nudging.STRATEGIES` that run here: none, nurl, always."""
_LENGTH_METRICS = ("mean_length", "min_length", "max_length", "clipped_ratio",
                   "mean_terminated_length", "min_terminated_length", "max_terminated_length")


# ----------------------------------------------------------------------------- data

def hinted_prompt(prompt, hint: str, question: str | None = None):
    """``prompt`` (text or chat messages) with ``hint`` placed after the question.

    When ``question`` occurs in the (last user) message, the hint goes right after it, as
    nudgelib's own trainer places it (:data:`nudgelib.rollouts.HINT_TEMPLATE`), i.e. before an
    answer-format instruction that follows the question; otherwise it is appended at the end.
    """
    def place(text: str) -> str:
        if question and question in text:
            return text.replace(question, prompt_text(question, hint, HINT_TEMPLATE), 1)
        return prompt_text(text, hint, HINT_TEMPLATE)

    if isinstance(prompt, str):
        return place(prompt)
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"prompt must be a string or a list of chat messages, got "
                        f"{type(prompt).__name__}")
    messages = [dict(m) for m in prompt]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users or not isinstance(messages[users[-1]].get("content"), str):
        raise ValueError("a hint goes into the last user message, which must exist and have "
                         "string content (multimodal prompts are not supported for nudging)")
    messages[users[-1]]["content"] = place(messages[users[-1]]["content"])
    return messages


def trl_dataset(problems: Sequence, *, instruction: str = DEFAULT_INSTRUCTION, hints=None,
                hint_type: str = "abstract", system_prompt: str | None = None):
    """A ``datasets.Dataset`` for TRL from nudgelib problems.

    Columns: ``prompt`` (chat messages: the question, then the instruction, as
    :class:`nudgelib.policies.hf.HFPolicy` builds them), ``question``, ``answer`` (what the
    correctness reward verifies against), ``problem_id`` and ``hint`` (from ``hints``, a HintBank
    or dict keyed by id; ``""`` where there is none).
    """
    from datasets import Dataset

    lookup = _hint_lookup(hints, hint_type, "problem_id") if hints is not None else None
    rows = []
    for p in problems:
        text = f"{p.question}\n{instruction}" if instruction else p.question
        prompt = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": text}]
        row = {"prompt": prompt, "question": p.question, "answer": p.answer,
               "problem_id": p.id}
        row["hint"] = (lookup(row) or "") if lookup else ""
        rows.append(row)
    return Dataset.from_list(rows)


def _hint_lookup(hints, hint_type: str, id_column: str) -> Callable[[Mapping], str | None]:
    """A function row -> hint: a function of (row, hint_type) as it is, a HintBank or a dict
    keyed by problem id through :func:`nudgelib.hints.bank.as_hint_source`."""
    if callable(hints) and not isinstance(hints, (HintBank, Mapping)):
        return lambda row: hints(row, hint_type)
    source = as_hint_source(hints)

    def lookup(row):
        if id_column not in row:
            raise KeyError(f"hints are looked up by the column {id_column!r}, which the dataset "
                           f"row does not have (columns: {sorted(row)}); set id_column=")
        return source(SimpleNamespace(id=str(row[id_column])), hint_type)

    return lookup


# ----------------------------------------------------------------------------- config

LOSS_TYPES = {"token_mean": "dapo", "seq_mean_token_mean": "grpo",
               "seq_mean_token_sum_norm": "dr_grpo"}
_SCALE = {"grpo": "group", "dr_grpo": "none"}


def device_and_dtype(cfg) -> tuple[bool, str]:
    """(train on CUDA?, dtype name) for a config: its dtype, else the policies' default."""
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    return cuda, cfg.dtype or default_dtype("cuda" if cuda else "cpu")


def lora_config(cfg):
    """The LoRA adapter of a config (all linear layers), as peft's ``LoraConfig``."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
                      lora_dropout=cfg.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def reward_functions(cfg, tokenizer=None) -> tuple[list, list[float]]:
    """nudgelib's reward mix for ``cfg`` as TRL reward functions and weights.

    Same as the scorer of :func:`nudgelib.training.build.build_scorer`: correctness (with the task's
    answer extraction, e.g. the short-answer rule for arithmetic), plus ``format_weight`` x the
    boxed-format reward, plus ``overlong_weight`` x DAPO's soft overlong penalty over
    ``max_new_tokens`` (cache = a quarter of it).
    """

    funcs = [make_correctness_reward(strategies=getattr(build_scorer(cfg), "strategies", None))]
    weights = [1.0]
    if cfg.format_weight:
        funcs.append(make_format_reward())
        weights.append(float(cfg.format_weight))
    if cfg.overlong_weight:
        funcs.append(overlong_penalty(cfg.max_new_tokens, max(1, cfg.max_new_tokens // 4),
                                      tokenizer))
        weights.append(float(cfg.overlong_weight))
    return funcs, weights


def grpo_config(cfg, output_dir: str, *, max_steps: int, num_processes: int = 1,
                **overrides) -> GRPOConfig:
    """``GRPOConfig`` for a nudgelib :class:`~nudgelib.training.config.TrainConfig` (e.g. a preset).

    One optimizer step sees ``prompts_per_step`` x ``group_size`` completions in total, split
    over ``num_processes`` and into micro-batches of at most ``micro_batch_size`` rows per
    process (gradient accumulation). Fields TRL cannot express raise an error that names them.
    """
    def bad(name, why):
        raise ConfigError(f"TrainConfig.{name}={getattr(cfg, name)!r} {why}")

    if cfg.policy != "hf":
        bad("policy", "is not a transformers model; the TRL path trains policy='hf' only")
    if cfg.aggregation not in LOSS_TYPES:
        bad("aggregation", f"has no TRL loss_type; expected one of {sorted(LOSS_TYPES)}")
    if cfg.estimator not in _SCALE:
        bad("estimator", f"has no TRL equivalent; expected one of {sorted(_SCALE)}")
    if cfg.surrogate != "ppo_clip":
        bad("surrogate", "has no TRL equivalent here; expected 'ppo_clip'")
    if cfg.stage1 != "none":
        bad("stage1", "is a two-stage schedule, which runs in nudgelib.training.trainer; under TRL run "
                      "GRPO (--nudging none), then NuRL from its adapter (--init-adapter)")
    if cfg.kl_beta and cfg.kl_estimator != "k3":
        bad("kl_estimator", "must be 'k3' (TRL's KL estimator) when kl_beta > 0")
    if cfg.stop_at_newline:
        bad("stop_at_newline", "is a stop sequence nudgelib's sampler applies; under TRL set it "
                               "False (completions then run to EOS or max_new_tokens)")
    rows = cfg.prompts_per_step * cfg.group_size
    if num_processes < 1 or rows % num_processes:
        raise ConfigError(f"prompts_per_step x group_size = {rows} completions per step do not "
                          f"split evenly over num_processes={num_processes}")
    per_process = rows // num_processes
    accumulation = 1
    while per_process // accumulation > cfg.micro_batch_size or per_process % accumulation:
        accumulation += 1
    cuda, dtype = device_and_dtype(cfg)
    kw = dict(
        output_dir=str(output_dir), max_steps=max_steps, seed=cfg.seed,
        num_generations=cfg.group_size, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
        per_device_train_batch_size=per_process // accumulation,
        gradient_accumulation_steps=accumulation, num_iterations=cfg.ppo_epochs,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type="constant_with_warmup",
        beta=cfg.kl_beta, epsilon=cfg.eps_low, epsilon_high=cfg.eps_high,
        loss_type=LOSS_TYPES[cfg.aggregation], scale_rewards=_SCALE[cfg.estimator],
        bf16=dtype == "bfloat16", fp16=dtype == "float16", use_cpu=not cuda,
        gradient_checkpointing=cfg.gradient_checkpointing, logging_steps=1,
        save_steps=cfg.save_every or max_steps, save_total_limit=cfg.keep_checkpoints or None,
        report_to="none", disable_dropout=True,
    )
    if "use_bias_correction_kl" in GRPOConfig.__dataclass_fields__:
        # TRL 1.16 multiplies the KL term by the importance ratio by default; nudgelib's KL
        # (nudgelib.core.losses.kl_penalty) is not ratio-weighted, so the two paths match only
        # with it off (it changes nothing while kl_beta = 0)
        kw["use_bias_correction_kl"] = False
    kw.update(overrides)
    return GRPOConfig(**kw)


# ----------------------------------------------------------------------------- trainer

@dataclass
class NudgeRecord:
    """What the nudging did to one generation batch (this process's rows)."""

    step: int
    strategy: str
    problem_ids: list
    hints: list  # per local row: the hint available for it (None: none)
    passed: list  # global: hint-free pass flag per completion, before nudging
    group_size: int
    nudged_groups: list  # global group indices that were nudged
    regenerated: list  # local row indices whose completion was (re)sampled with the hint
    prompt_ids_before: list = field(default_factory=list)
    completion_ids_before: list = field(default_factory=list)
    prompt_ids_after: list = field(default_factory=list)
    completion_ids_after: list = field(default_factory=list)
    hinted_passed: list = field(default_factory=list)  # per regenerated row
    row_offset: int = 0  # global index of this process's first row


class NudgedGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with nudgelib's hint nudging applied to its groups (module docstring).

    Extra arguments: ``nudging`` (``"nurl"``, ``"always"`` or ``"none"``), ``hints`` and
    ``hint_type`` (where hints come from when the ``hint_column`` is absent or empty),
    ``id_column`` / ``question_column`` (dataset columns: the problem id, the question text the
    hint follows), ``pass_reward`` (which reward decides a pass: an index or name among
    ``reward_funcs``, or a separate reward function) and ``pass_threshold`` (a completion passes
    when that reward is >= it; 0.5 suits a 0/1 correctness reward).
    """

    def __init__(self, *args, nudging: str = "nurl", hints=None, hint_type: str = "abstract",
                 hint_column: str | None = "hint", id_column: str = "problem_id",
                 question_column: str | None = "question", pass_reward: int | str | Callable = 0,
                 pass_threshold: float = 0.5, **kwargs):
        if nudging not in STRATEGIES:
            raise ValueError(f"nudging={nudging!r}; expected one of {TRL_STRATEGIES}")
        if nudging not in TRL_STRATEGIES:
            raise NotImplementedError(
                f"nudging={nudging!r} ({STRATEGIES[nudging].title}) is not available on TRL; "
                f"it runs in nudgelib.training.trainer. Here: one of {TRL_STRATEGIES}")
        super().__init__(*args, **kwargs)
        self.nudging, self.hint_type = nudging, hint_type
        self.hint_column, self.id_column, self.question_column = hint_column, id_column, question_column
        self.pass_threshold = float(pass_threshold)
        self._hint_source = _hint_lookup(hints, hint_type, id_column) if hints is not None else None
        self._pass_fn, self.pass_reward_name = self._resolve_pass_reward(pass_reward)
        self._nudge_rows = None
        self.last_nudge: NudgeRecord | None = None
        self.nudge_totals = {"batches": 0, "groups": 0, "zero_pass_groups": 0,
                             "nudged_groups": 0, "hinted_completions": 0, "hinted_passes": 0,
                             "missing_hints": 0}
        if nudging != "none":
            for attr, what in (("tools", "tools"), ("rollout_func", "rollout_func"),
                               ("environment_factories", "environment_factory")):
                if getattr(self, attr, None):
                    raise ValueError(f"nudging={nudging!r} regenerates plain single-turn "
                                     f"completions; it cannot be combined with {what}")
            columns = getattr(self.train_dataset, "column_names", None) or []
            if self._hint_source is None and (not hint_column or hint_column not in columns):
                raise ValueError(
                    f"nudging={nudging!r} needs hints: a {hint_column!r} column in "
                    f"train_dataset (columns: {columns}) or hints=HintBank / dict keyed by "
                    f"{id_column!r} / function (row, hint_type) -> hint")

    # -- setup helpers
    def _resolve_pass_reward(self, pass_reward):
        if callable(pass_reward) and not isinstance(pass_reward, torch.nn.Module):
            return pass_reward, getattr(pass_reward, "__name__", "pass_reward")
        names = list(self.reward_func_names)
        if isinstance(pass_reward, str):
            if pass_reward not in names:
                raise ValueError(f"pass_reward={pass_reward!r} is not one of the reward "
                                 f"functions {names}")
            pass_reward = names.index(pass_reward)
        if not isinstance(pass_reward, int) or not 0 <= pass_reward < len(names):
            raise ValueError(f"pass_reward must be an index into reward_funcs (0..{len(names) - 1}),"
                             f" a reward function name {names}, or a reward function; got "
                             f"{pass_reward!r}")
        fn = self.reward_funcs[pass_reward]
        if isinstance(fn, torch.nn.Module):
            raise ValueError(f"pass_reward={names[pass_reward]!r} is a reward model; the 0/G "
                             f"trigger needs a verifiable reward function (e.g. "
                             f"nudgelib.tasks.rewards.correctness_reward)")
        return fn, names[pass_reward]

    def _row_hint(self, row) -> str | None:
        hint = row.get(self.hint_column) if self.hint_column else None
        if hint is not None and not isinstance(hint, str):
            raise TypeError(f"dataset column {self.hint_column!r} must hold strings ('' for no "
                            f"hint); got {type(hint).__name__}")
        if not hint and self._hint_source is not None:
            hint = self._hint_source(row)
        return hint or None

    def _passes(self, rows, prompts, completions, completion_ids) -> list[bool]:
        """Pass flags of completions under the pass reward (None counts as a fail)."""
        if not rows:
            return []
        keys = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")]
        kwargs = {k: [r[k] for r in rows] for k in keys}
        kwargs.update(trainer_state=self.state, log_extra=lambda *a, **k: None,
                      log_metric=lambda *a, **k: None)
        values = self._pass_fn(prompts=prompts, completions=completions,
                               completion_ids=completion_ids, **kwargs)
        if len(values) != len(rows):
            raise ValueError(f"pass_reward {self.pass_reward_name!r} returned {len(values)} "
                             f"values for {len(rows)} completions")
        return [v is not None and float(v) >= self.pass_threshold for v in values]

    def _decode(self, completion_ids, prompts) -> list:
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        if is_conversational({"prompt": prompts[0]}):
            return [[{"role": "assistant", "content": t}] for t in texts]
        return texts

    def _gather_flags(self, flags: Sequence[bool]) -> torch.Tensor:
        local = torch.tensor([float(f) for f in flags], device=self.accelerator.device)
        return gather(local).cpu()

    # -- TRL hooks
    def _generate_and_score_completions(self, inputs):
        self._nudge_rows = inputs  # _generate only sees prompts; the hints live in the rows
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._nudge_rows = None

    def _generate(self, prompts: list):
        rows = self._nudge_rows
        if rows is None or not self.model.training or len(rows) != len(prompts):
            return super()._generate(prompts)  # evaluation: never hints
        hints = [self._row_hint(r) for r in rows] if self.nudging != "none" else [None] * len(rows)
        if self.nudging == "always":
            sampled = [p if h is None else hinted_prompt(p, h, r.get(self.question_column or ""))
                       for p, h, r in zip(prompts, hints, rows)]
            out = super()._generate(sampled)
            return self._after_always(prompts, rows, hints, out)
        out = super()._generate(prompts)
        return self._nurl(prompts, rows, hints, out)

    # -- strategies
    def _new_record(self, rows, hints, passed, nudged, regenerated, out) -> NudgeRecord:
        return NudgeRecord(
            step=self.state.global_step, strategy=self.nudging,
            problem_ids=[r.get(self.id_column) for r in rows], hints=hints,
            passed=[bool(x) for x in passed.tolist()], group_size=self.num_generations,
            nudged_groups=nudged, regenerated=regenerated,
            prompt_ids_before=[list(x) for x in out[0]],
            completion_ids_before=[list(x) for x in out[1]],
            row_offset=self.accelerator.process_index * len(rows))

    def _nurl(self, prompts, rows, hints, out):
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, timgs = out
        G, n_local = self.num_generations, len(prompts)
        offset = self.accelerator.process_index * n_local
        passed = self._gather_flags(self._passes(rows, prompts, completions, completion_ids))
        has_hint = self._gather_flags([h is not None for h in hints])
        n_groups = passed.numel() // G
        # the one 0/G rule of nudgelib (nudgelib.core.trigger.nurl_trigger), on the gathered batch
        plan = nurl_trigger(passed.bool(), torch.arange(passed.numel()) // G,
                            has_hint.view(n_groups, G).bool().all(1))
        zero, fire = plan.zero_pass, plan.nudged
        targets = [r - offset for r in plan.regenerate if offset <= r < offset + n_local]
        record = self._new_record(rows, hints, passed, plan.groups, targets, out)
        counts = gather(torch.tensor([len(targets)], device=self.accelerator.device))
        n_max = int(counts.max())
        hinted_passed = []
        if n_max:
            asked = [hinted_prompt(prompts[i], hints[i], rows[i].get(self.question_column or ""))
                     for i in targets]
            filler = asked[0] if asked else prompts[0]
            new_prompt_ids, _, mm = self._tokenize_prompts(asked + [filler] * (n_max - len(asked)))
            new_ids, new_logprobs = self._generate_single_turn(new_prompt_ids, None, mm, 1)
            prompt_ids, completion_ids = list(prompt_ids), list(completion_ids)
            completions = list(completions)
            logprobs = list(logprobs) if logprobs is not None else None
            new_completions = self._decode(new_ids[:len(targets)], prompts)
            for k, i in enumerate(targets):
                prompt_ids[i], completion_ids[i] = list(new_prompt_ids[k]), list(new_ids[k])
                completions[i] = new_completions[k]
                if logprobs is not None:
                    logprobs[i] = new_logprobs[k]
            hinted_passed = self._passes([rows[i] for i in targets], [prompts[i] for i in targets],
                                         new_completions, [new_ids[k] for k in range(len(targets))])
            self._relog_lengths(record.prompt_ids_before, record.completion_ids_before,
                                prompt_ids, completion_ids)
        record.prompt_ids_after = [list(x) for x in prompt_ids]
        record.completion_ids_after = [list(x) for x in completion_ids]
        record.hinted_passed = hinted_passed
        self._log_nudge(record, passed, zero, fire, has_hint, hinted_passed)
        regenerated = set(targets)
        self._pending_extra_logs["nudge_hint"].extend(
            hints[i] if i in regenerated else "" for i in range(n_local))
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, timgs

    def _after_always(self, prompts, rows, hints, out):
        completions, completion_ids = out[3], out[1]
        G = self.num_generations
        flags = self._passes(rows, prompts, completions, completion_ids)
        hinted = [h is not None for h in hints]
        passed, has_hint = self._gather_flags(flags), self._gather_flags(hinted)
        n_groups = passed.numel() // G
        fire = has_hint.view(n_groups, G).bool().all(1)
        zero = passed.view(n_groups, G).sum(1) == 0  # (with hints, for the record)
        targets = [i for i, h in enumerate(hinted) if h]
        record = self._new_record(rows, hints, passed, fire.nonzero().flatten().tolist(),
                                  targets, out)
        record.prompt_ids_after, record.completion_ids_after = (record.prompt_ids_before,
                                                               record.completion_ids_before)
        record.hinted_passed = [flags[i] for i in targets]
        self._log_nudge(record, passed, zero, fire, has_hint, record.hinted_passed,
                        plain=~has_hint.bool())
        self._pending_extra_logs["nudge_hint"].extend(h or "" for h in hints)
        return out

    # -- logging
    def _log_nudge(self, record, passed, zero, fire, has_hint, hinted_passed, plain=None):
        device = self.accelerator.device
        local = torch.tensor([float(sum(hinted_passed)), float(len(hinted_passed))], device=device)
        h_pass, h_n = gather(local).view(-1, 2).sum(0).tolist()
        n_groups = zero.numel()
        metrics = self._metrics["train"]
        free = passed if plain is None else passed[plain]
        if free.numel():
            metrics["pass_rate"].append(free.mean().item())
        metrics["frac_zero_pass"].append(zero.float().mean().item())
        metrics["frac_nudged"].append(fire.float().mean().item())
        missing = 0
        if self.nudging != "none":  # plain GRPO: the pass metrics only (no hints to miss)
            missing = int((zero & ~has_hint.view(n_groups, -1).bool().all(1)).sum())
            metrics["missing_hints"].append(float(missing))
        if h_n:
            metrics["hinted_pass_rate"].append(h_pass / h_n)
        t = self.nudge_totals
        t["batches"] += 1
        t["groups"] += n_groups
        t["zero_pass_groups"] += int(zero.sum())
        t["nudged_groups"] += int(fire.sum())
        t["hinted_completions"] += int(h_n)
        t["hinted_passes"] += int(h_pass)
        t["missing_hints"] += missing
        self.last_nudge = record

    def _relog_lengths(self, old_prompts, old_completions, new_prompts, new_completions):
        """Make TRL's completion-length metrics and token count describe the spliced batch."""
        device = self.accelerator.device
        delta = sum(map(len, new_prompts)) + sum(map(len, new_completions)) \
            - sum(map(len, old_prompts)) - sum(map(len, old_completions))
        self.state.num_input_tokens_seen += int(gather(torch.tensor([delta], device=device)).sum())
        metrics = self._metrics["train"]
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]
        lengths = gather(torch.tensor([len(c) for c in new_completions], device=device)).float()
        eos_and_pad = [*self.eos_token_ids, self._tokenizer.pad_token_id]
        truncated = gather(torch.tensor([bool(c) and c[-1] not in eos_and_pad
                                         for c in new_completions], device=device)).bool()
        done = lengths[~truncated] if (~truncated).any() else torch.zeros(1, device=lengths.device)
        values = (lengths.mean(), lengths.min(), lengths.max(), truncated.float().mean(),
                  done.mean(), done.min(), done.max())
        for name, v in zip(_LENGTH_METRICS, values):
            series = metrics[f"completions/{name}"]
            if series:
                series[-1] = v.item()
