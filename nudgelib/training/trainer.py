"""The training loop around the step: data order, validation, the stage switch, checkpoints,
resume and fork, export. The step itself is one page, :mod:`nudgelib.training.step`.

    from nudgelib.training.config import get_train_config
    cfg = get_train_config("toy-fast", seed=0)
    trainer = Trainer(cfg, out_dir="runs/toy")
    df = trainer.train(until_step=20)        # metrics per step (also runs/toy/metrics.jsonl)

or headless, the same thing:

    python -m nudgelib.training --config toy-fast --steps 20 --out runs/toy [--resume] [--seed S]
        [--save-every K] [--nudging nurl] [--hint-bank DIR] [--set key=value ...] [--fork-from CKPT]

The run's final policy is exported to ``out/adapter`` (a standard PEFT adapter for LoRA).

Each step: draw ``prompts_per_step`` problems in a seeded per-epoch order; sample
``group_size`` completions each; score them; hand the batch to the nudging hook (where NuRL
acts, :mod:`nudgelib.nudging`); compute advantages (:mod:`nudgelib.core.advantages`) and the
policy loss (:mod:`nudgelib.core.losses`) over micro-batches; clip gradients; step AdamW.
With ``stage1`` set, nudging waits for stage 2 (docs/method.md §2.4): plain GRPO until a plateau
(or a fixed step), then the problems solved n/n are dropped and nudging switches on.

Checkpoints (``out/checkpoints/step-NNNNNN/``) hold the policy (a standard PEFT adapter for
LoRA policies), the optimizer and scheduler, every RNG state, the step counter and the data
order, and are written to a temporary folder and renamed, so a run killed at any moment
resumes from its last complete checkpoint and logs exactly what an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch

from nudgelib.hints.bank import HintBank
from nudgelib.nudging import Nudger, SamplingContext, warn_if_no_hints
from nudgelib.rollouts import RolloutBatch, evaluate_pass_counts
from nudgelib.tasks.problems import Problem
from nudgelib.training.build import (
    build_hints,
    build_nudger,
    build_policy,
    build_problems,
    build_scorer,
    build_val_problems,
)
from nudgelib.training.config import ConfigError, TrainConfig
from nudgelib.training.metrics_file import restore_metric_rows, set_aside
from nudgelib.training.runs import (
    COMPLETE,
    RunFolderError,
    RunLock,
    check_folder_present,
    check_free_space,
    checkpoint_problem,
    claim_run_folder,
    clean_partial_checkpoints,
    complete_checkpoints,
    newest_verified_checkpoint,
    retire_checkpoint,
    rng_state,
    save_error,
    save_folder_atomic,
    set_rng_state,
    verify_folder,
    write_atomic,
)
from nudgelib.training.stages import PlateauDetector, drop_solved, feed_plateau_detectors
from nudgelib.training.step import train_step
from nudgelib.ui.progress import progress_bar

METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
_COMPLETE = COMPLETE
# fields that may differ between a run and its resumption
_RESUMABLE_CHANGES = {"save_every", "keep_checkpoints"}
# fields a run forked from another run's checkpoint may change (Trainer.fork_from): what to do
# from now on (nudging, stages, validation), never what the state was made of
_FORK_CHANGES = _RESUMABLE_CHANGES | {
    "name", "nudging", "hint_type", "condition_on", "hint_bank", "nudging_options",
    "hint_explanation_tokens", "hint_tokens", "stage1", "stage1_steps", "plateau_metric",
    "plateau_patience", "plateau_window", "plateau_min_delta", "drop_solved_samples",
    "val_every", "n_val_problems", "val_samples", "surrogate", "seed",
    "group_size"}  # more samples per prompt from the same checkpoint: an exit of its own
FORK_FILE = "fork.json"
ADAPTER = "adapter"


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Runs and checkpoints RL training for one :class:`TrainConfig`.

    ``policy``, ``problems``, ``scorer`` and ``nudger`` (a :class:`nudgelib.nudging.Nudger`)
    default to what the config builds; pass them to train something of your own.
    ``callbacks`` are called as ``cb(trainer, row, batch)`` after every step, before the row is
    written to ``metrics.jsonl`` (keys a callback adds to ``row`` are saved with it); the live
    dashboard of the notebooks is one.
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
            raise ConfigError("the training set is empty; check n_train_problems / difficulty_counts")
        self.lock = None  # one writer per run folder, for this Trainer's life (nudgelib.training.runs)
        if self.out is not None:  # refused here, before a warm start or step 1 is spent
            claim_run_folder(self.out, cfg.to_dict(), self.problems)
            self.lock = RunLock(self.out).acquire()
            if self.lock.replaced:
                warnings.warn(f"{self.out}: {self.lock.replaced_note()}", stacklevel=2)
        with closed_on_error(self):  # a start refused after the lock was taken leaves none
            self._build(policy, scorer, nudger, callbacks, progress, warm, val_problems)

    def _build(self, policy, scorer, nudger, callbacks, progress, warm, val_problems) -> None:
        cfg = self.cfg
        self.policy = policy if policy is not None else build_policy(cfg, warm=warm,
                                                                      progress=progress)
        self.scorer = scorer or build_scorer(cfg)
        self.all_problems = list(self.problems)
        self.hints_fingerprint, self.hint_writing = None, {}  # a bank's: see _check_hints
        if nudger is None and cfg.nudging != "none":
            nudger = build_nudger(cfg)
            if nudger.hint_types:  # dynamic sampling uses no hints
                hints = build_hints(cfg, nudger.hint_types, self.problems, self.policy, self.out,
                                    progress=progress)
                if isinstance(hints, HintBank):  # writing it is booked in the 1st step's ledger
                    self.hints_fingerprint, self.hint_writing = hints.fingerprint(), hints.writing_cost()
                nudger.use_hints(hints)
                warn_if_no_hints(nudger, self.problems)
        if nudger is not None and not isinstance(nudger, Nudger):
            raise TypeError(f"nudger={nudger!r} does not implement nudgelib.nudging.Nudger (name, "
                            f"hint_types, sets_advantages, totals, use_hints, sample, nudge, "
                            f"advantages, auxiliary_loss, state_dict, load_state_dict); subclass "
                            f"nudgelib.nudging.NudgingStrategy")
        self.nudger: Nudger | None = nudger
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
        if self.out is not None:  # weights + two Adam moments, the new and the kept ones
            ckpt = 3 * sum(p.numel() * p.element_size() for p in self.params) + 2**20
            check_free_space(self.out, ckpt * (max(1, cfg.keep_checkpoints) + 1), "checkpoints")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.99),
                                           weight_decay=cfg.weight_decay)
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.step, self.epoch, self.cursor = 0, 0, 0
        self.sample_rng = torch.Generator().manual_seed(cfg.seed)
        self.rows: list[dict] = []
        self.last_batch: RolloutBatch | None = None
        self.fork_info: dict | None = None  # what fork_from did (also fork.json)
        self.resumed_from: Path | None = None  # the checkpoint resume_or_start loaded
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
    def sampling_context(self) -> SamplingContext:
        """What a nudging strategy may use to sample this step's rollouts: the policy, the
        scorer, the config's sampling settings and the trainer's sampling generator."""
        cfg = self.cfg
        return SamplingContext(policy=self.policy, scorer=self.scorer, group_size=cfg.group_size,
                               max_new_tokens=cfg.max_new_tokens, generator=self.sample_rng,
                               temperature=cfg.temperature, top_p=cfg.top_p, step=self.step + 1,
                               prompts_per_call=cfg.prompts_per_call or None)

    def train_step(self) -> dict:
        """One step (:func:`nudgelib.training.step.train_step`: sample, hint-free metrics,
        nudge in stage 2, advantages, loss, optimizer step); returns the step's metrics row."""
        cfg = self.cfg
        problems = self.next_problems()
        nudger = self.nudger if self.nudger is not None and self.stage == 2 else None
        missed = self._missing_hints()
        lr = self.optimizer.param_groups[0]["lr"]
        out = train_step(self.policy, self.optimizer, self.scheduler, cfg, problems,
                         self.sampling_context(), nudger)
        self.step += 1
        batch, mask = out.batch, out.batch.completion_mask
        hinted = batch.hinted
        row = {
            "step": self.step,
            "stage": self.stage,
            "reward_mean": float(batch.rewards.mean()),
            "reward_std": float(batch.rewards.std(unbiased=False)),
            **out.plain,
            "frac_zero_std": batch.frac_zero_std(),
            "frac_nudged": float(batch.nudge.frac_nudged),
            "missing_hints": self._missing_hints() - missed,  # 0/G groups with no hint to give
            "hinted_pass_rate": float(batch.correct[hinted].float().mean()) if hinted.any()
            else None,
            **out.nudged,
            "adv_abs_mean": float(out.advantages.abs().mean()),
            "len_mean": float(batch.lengths.float().mean()),
            "truncated_frac": float(batch.truncated.float().mean()),
            "entropy_est": float(-(batch.old_logp * mask).sum() / mask.sum().clamp(min=1)),
            "lr": lr,
            **out.loss,
            "epoch": self.epoch,
            "n_problems": len(self.problems),
            "t_sample": round(out.seconds["sample"], 4),
            "t_resample": round(out.seconds["resample"], 4),
            "rows_resampled": out.rows_resampled,
            **{f"cost_{k}": v for k, v in out.cost.items()},
            "cost_hint_writing_calls": self.hint_writing.pop("model_calls", 0),
            "cost_tokens_hint_writing": self.hint_writing.pop("tokens", 0),
            "t_train": round(out.seconds["train"], 4),
        }
        if cfg.val_every and self.step % cfg.val_every == 0:
            t4 = time.time()
            row["val_pass_rate"] = self.validate()
            row["t_val"] = round(time.time() - t4, 4)
        self.last_batch = batch
        if self.stage == 1 and cfg.stage1 != "none" and self._stage_one_done(row):
            row.update(self.enter_stage_two())
        return row

    def _missing_hints(self) -> int:
        return int(self.nudger.totals.get("missing_hints", 0)) if self.nudger is not None else 0

    def validate(self, n_samples: int | None = None) -> float:
        """Hint-free pass rate on the validation problems (``val_samples`` each). Sampled with
        a generator seeded by the step, so validating never shifts the training samples."""
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
        """Stage 1 ends at a fixed step, or when every watched metric has gone
        ``plateau_patience`` training steps without improving (counted in steps, so a
        validation metric logged every val_every steps plateaus as fast as the reward), or at
        the stage1_steps cap."""
        cfg = self.cfg
        if cfg.stage1 == "steps":
            return self.step >= cfg.stage1_steps
        for name in self.plateau_metrics:
            if name not in row and name != "val_pass_rate":  # validation: only some steps
                raise ConfigError(f"TrainConfig.plateau_metric={name!r} is not a metric of "
                                  f"this run; metrics are {sorted(row)}")
        fired = feed_plateau_detectors(self.detectors, row)
        return fired or bool(cfg.stage1_steps and self.step >= cfg.stage1_steps)

    def enter_stage_two(self, *, drop: bool = True) -> dict:
        """Drop the problems the policy solves n/n (hint-free; ``drop=False``: keep the set,
        e.g. a pool computed at a fork), then switch nudging on."""
        cfg = self.cfg
        dropped = 0
        if drop and cfg.drop_solved_samples:
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
    def train(self, until_step: int) -> pd.DataFrame:
        """Train until ``self.step == until_step``; returns all metrics rows as a DataFrame."""
        if not isinstance(until_step, int) or until_step < 0:
            raise ConfigError(f"until_step must be an integer >= 0, got {until_step!r}")
        bar = progress_bar(total=until_step, initial=self.step, desc=f"train {self.cfg.name}",
                   disable=not self.progress)
        start, saved = self.step, None
        while self.step < until_step:
            row = self.train_step()
            try:
                for cb in self.callbacks:  # first: a column a callback adds reaches metrics.jsonl
                    cb(self, row, self.last_batch)
            finally:  # the step happened: its row is stored even when a callback raises (Ctrl-C)
                self.rows.append(row)
                self._write_metrics(row)
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
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    # -- files
    def _write_metrics(self, row: dict) -> None:
        if self.out is None:
            return
        check_folder_present(self.out)
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
        check_folder_present(self.out)
        state = {
            "step": self.step, "epoch": self.epoch, "cursor": self.cursor,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "sample_rng": self.sample_rng.get_state(), "rng": rng_state(),
            "nudger": self.nudger.state_dict() if self.nudger is not None else None,
            "stage": self.stage, "stage_switch_step": self.stage_switch_step,
            "detectors": {m: d.state_dict() for m, d in self.detectors.items()},
            "problem_ids": [p.id for p in self.problems],
            "elapsed": time.time() - self._t0,
            # the metrics history up to this step, checksummed with the checkpoint: a damaged
            # metrics.jsonl is rebuilt from it on resume
            "metric_rows": [r for r in self.rows if r.get("step", 0) <= self.step],
            "hints_fingerprint": self.hints_fingerprint, "hint_writing": self.hint_writing,
        }

        def write(tmp: Path) -> None:
            self.policy.save(tmp / "policy")
            torch.save(state, tmp / "trainer_state.pt")
            (tmp / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))

        try:  # files, then their manifest, then COMPLETE; fsynced; renamed into place
            final = save_folder_atomic(self.checkpoint_dir(self.step), write, last=_COMPLETE)
        except (OSError, RuntimeError) as err:  # a full disk: RuntimeError "unexpected pos"
            raise save_error(err, self.out, f"the checkpoint of step {self.step}") from err
        self._prune_checkpoints()
        return final

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.keep_checkpoints
        if not keep:
            return
        done = complete_checkpoints(self.out)
        for old in done[:-keep]:
            retire_checkpoint(old)  # its COMPLETE first: a kill never leaves a false one
        clean_partial_checkpoints(self.out)

    def load_checkpoint(self, path: str | os.PathLike, *, fork: bool = False) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; metrics rows after it are dropped.
        ``fork=True``: the checkpoint is another run's (see :meth:`fork_from`)."""
        path = Path(path)
        if not (path / _COMPLETE).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {_COMPLETE} file)")
        problem = checkpoint_problem(path)  # every load path: resume, fork, a notebook's call
        if problem is not None:
            raise RunFolderError(
                f"checkpoint {path} is damaged: {problem}. Nothing was loaded; "
                + ("fork from another checkpoint of that run" if fork else
                   "resume picks the newest intact checkpoint by itself"))
        saved = TrainConfig.from_dict(json.loads((path / "config.json").read_text()))
        diff = {k for k, v in saved.to_dict().items()
                if self.cfg.to_dict()[k] != v} - (_FORK_CHANGES if fork else _RESUMABLE_CHANGES)
        if diff:
            what = "fork from" if fork else "resume"
            raise ConfigError(f"cannot {what} {path}: the checkpoint was made with a different "
                              "config for " + ", ".join(
                                  f"{k} (checkpoint {saved.to_dict()[k]!r}, now "
                                  f"{self.cfg.to_dict()[k]!r})" for k in sorted(diff)))
        try:
            self.policy.load(path / "policy")
            st = torch.load(path / "trainer_state.pt", weights_only=False)
        except Exception as err:  # noqa: BLE001 (whatever a damaged file raises, name it)
            raise RunFolderError(f"checkpoint {path} cannot be loaded ({type(err).__name__}: "
                                 f"{err}); {verify_folder(path) or 'its files match'}") from err
        if not fork:
            self._check_hints(path, st.get("hints_fingerprint"))
            self.hint_writing = st.get("hint_writing") or {}  # booked before the checkpoint
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.step, self.epoch, self.cursor = st["step"], st["epoch"], st["cursor"]
        self.sample_rng.set_state(st["sample_rng"])
        set_rng_state(st["rng"])
        if fork:
            self._load_problem_ids(st)
            self._take_metrics(path.parent.parent / METRICS_FILE, forked_from=str(path),
                               saved=st.get("metric_rows"))
            return
        if st.get("nudger") is not None and self.nudger is not None:
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
            self._take_metrics(self.out / METRICS_FILE, saved=st.get("metric_rows"))

    def _check_hints(self, path: Path, saved: str | None) -> None:
        """Refuse to resume on other hints than the checkpoint was trained with."""
        if saved and (now := self.hints_fingerprint) and saved != now:
            where = self.cfg.hint_bank or (self.out / "hint_bank" if self.out else "the bank")
            raise RunFolderError(
                f"hint bank {where}: its hints differ from the ones checkpoint {path.name} was "
                f"trained with (fingerprint {saved[:12]}, now {now[:12]}): the bank was edited, "
                f"replaced or damaged. Nothing was loaded; restore that bank to resume, or "
                f"train on these hints as a new run (--fork-from {path} --out NEW_FOLDER)")

    def _load_problem_ids(self, st: dict) -> None:
        if "problem_ids" in st:
            by_id = {p.id: p for p in self.all_problems}
            missing = [i for i in st["problem_ids"] if i not in by_id]
            if missing:
                raise ConfigError(f"cannot resume: checkpoint problems {missing[:3]} are not in "
                                  f"this run's training set")
            self.problems = [by_id[i] for i in st["problem_ids"]]

    def _take_metrics(self, source: Path, forked_from: str | None = None,
                      saved: list[dict] | None = None) -> None:
        """This run's history up to the loaded step (:func:`restore_metric_rows`), kept as its
        metrics file when it has an out_dir."""
        self.rows = restore_metric_rows(source, self.step, saved, forked_from)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            write_atomic(self.out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.rows))

    def fork_from(self, checkpoint: str | os.PathLike, *,
                  pool: Sequence[Problem] | None = None) -> dict:
        """Start this run from another run's checkpoint: NuRL from the GRPO checkpoint at its
        plateau (docs/method.md §2.4). The policy, optimizer, scheduler, step, RNG states and data
        order are taken over; only what happens from now on may differ from the source's
        config (nudging, stages, validation, the surrogate, the seed). The source's metrics up
        to that step become this run's history. With nudging on, stage 2 begins at once: the
        problems solved n/n are dropped and hints switch on.

        ``pool``: the problems to train on from now on, computed once at the fork and shared by
        several forks (then nothing is dropped here, and a run without nudging trains on the
        same pool: the control of a forked comparison). A ``seed`` other than the source's
        re-seeds sampling and the data order from the fork on (forks that differ only in their
        seed). Returns what happened (also saved as ``fork.json``)."""
        path = Path(checkpoint)
        self.load_checkpoint(path, fork=True)
        info = {"forked_from": str(path), "step": self.step}
        source_seed = json.loads((path / "config.json").read_text()).get("seed")
        if source_seed != self.cfg.seed:
            self.sample_rng.manual_seed(self.cfg.seed)
            torch.manual_seed(self.cfg.seed)
            info["reseeded"] = self.cfg.seed
        self.stage, self.stage_switch_step = 1, None
        if pool is not None:
            by_id = {p.id: p for p in self.all_problems}
            unknown = [p.id for p in pool if p.id not in by_id]
            if unknown or not pool:
                raise ConfigError(f"fork_from pool: {len(pool)} problem(s), "
                                  f"{unknown[:3] or 'none'} not in this run's training set; "
                                  f"expected a non-empty subset of it")
            self.problems = [by_id[p.id] for p in pool]
            self.epoch, self.cursor = self.epoch + 1, 0  # a fresh order over the pool
            info["pool"] = len(self.problems)
        if self.nudger is not None:
            info.update(self.enter_stage_two(drop=pool is None))
        if self.out is not None:
            write_atomic(self.out / FORK_FILE, json.dumps(info, indent=1))
        self.fork_info = info
        return info

    def close(self) -> None:
        """Release the run folder's lock (also done when the process exits)."""
        if self.lock is not None:
            self.lock.release()

    def export_adapter(self, path: str | os.PathLike | None = None) -> Path:
        """Save the current policy (a standard PEFT adapter for LoRA policies) to ``path``
        (default ``out/adapter``), atomically, with the run's config beside it."""
        if path is None:
            if self.out is None:
                raise ConfigError("export_adapter needs a path: this Trainer has no out_dir")
            path = self.out / ADAPTER
        path = Path(path)
        if path.exists() and not (path / "nudgelib_config.json").is_file():
            raise RunFolderError(f"{path} exists and is not an adapter nudgelib exported; "
                                 f"nothing was written (choose another path)")
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        self.policy.save(tmp)
        (tmp / "nudgelib_config.json").write_text(json.dumps(
            {**self.cfg.to_dict(), "step": self.step}, indent=1))
        shutil.rmtree(path, ignore_errors=True)  # a previous export of ours
        tmp.rename(path)
        return path


def resume_or_start(cfg: TrainConfig, out_dir: str | os.PathLike, **kwargs) -> Trainer:
    """A Trainer for ``out_dir`` that continues from its last complete checkpoint if it has
    one (after a crash or a Colab disconnect: re-run the same cell), else a fresh one.
    ``kwargs`` go to :class:`Trainer`."""
    ckpts = complete_checkpoints(out_dir)
    trainer = Trainer(cfg, out_dir, warm=not ckpts, **kwargs)  # claims and locks the folder
    with closed_on_error(trainer):
        ckpt = newest_verified_checkpoint(out_dir, report=lambda m: warnings.warn(m, stacklevel=3))
        if ckpts and ckpt is None:
            raise RunFolderError(f"{out_dir}: every checkpoint is damaged (see the warning); "
                                 f"nothing was changed. Move the run folder aside to start afresh")
        if ckpt is not None:
            trainer.load_checkpoint(ckpt)
            trainer.resumed_from = ckpt
    if ckpt is None and (Path(out_dir) / METRICS_FILE).exists():
        n = len((Path(out_dir) / METRICS_FILE).read_text(errors="replace").splitlines())
        aside = set_aside(Path(out_dir) / METRICS_FILE, "before-restart")
        warnings.warn(f"{out_dir}: no complete checkpoint; starting again from step 0 (the "
                      f"{n} metric rows of the attempt before are kept as {aside.name})", stacklevel=2)
    return trainer


def resume_or_fork(cfg: TrainConfig, out_dir: str | os.PathLike,
                   checkpoint: str | os.PathLike, *, pool: Sequence[Problem] | None = None,
                   **kwargs) -> Trainer:
    """A Trainer for ``out_dir`` that continues its own last checkpoint if it has one, else
    starts by forking from ``checkpoint`` (:meth:`Trainer.fork_from`; ``trainer.fork_info``
    says what the fork did; ``pool``: see there). ``kwargs`` go to :class:`Trainer`."""
    if complete_checkpoints(out_dir):
        return resume_or_start(cfg, out_dir, **kwargs)
    trainer = Trainer(cfg, out_dir, warm=False, **kwargs)
    with closed_on_error(trainer):
        trainer.fork_from(checkpoint, pool=pool)
    return trainer


@contextlib.contextmanager
def closed_on_error(trainer: Trainer):
    """Release ``trainer``'s run-folder lock if the block fails (a refused resume or fork
    leaves no lock behind; the folder is as it was)."""
    try:
        yield trainer
    except BaseException:
        trainer.close()
        raise


