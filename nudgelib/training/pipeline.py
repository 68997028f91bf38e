"""The paper's two-stage pipeline in two runs: plain GRPO, then NuRL forked from GRPO's
checkpoint at its plateau (docs/method.md §2.4), and where notebooks keep their run folders.

    plan = pipeline_plan("cpu-fast")           # config, steps, switch cap, plateau metrics
    out = grpo_then_nurl(plan["config"], default_run_root() / "demo", steps=plan["steps"],
                         switch_metrics=plan["switch_metrics"],
                         max_switch_step=plan["max_switch_step"])
    out["grpo"], out["nurl"], out["switch_step"]     # two Trainers and the fork step

:func:`find_plateau` applies the same plateau rule as a two-stage run inside one Trainer
(``stage1="plateau"``); forking (:meth:`nudgelib.training.trainer.Trainer.fork_from`) gives the same
numbers as that one run switching at the same step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from nudgelib.policies.models import cache_dir
from nudgelib.presets import PRESETS
from nudgelib.training.config import ConfigError, TrainConfig, get_train_config
from nudgelib.training.stages import PlateauDetector, feed_plateau_detectors
from nudgelib.training.trainer import resume_or_fork, resume_or_start

RUN_DIR_ENV = "NUDGE_RUN_DIR"
COLAB_DRIVE = Path("/content/drive/MyDrive")


def default_run_root() -> Path:
    """Where notebooks keep their runs: ``$NUDGE_RUN_DIR``; else, on Colab with Google Drive
    mounted, ``MyDrive/nudgelib-runs`` (runs survive a disconnect); else ``runs/`` under the
    nudgelib cache folder (``$NUDGE_CACHE_DIR``, default ``~/.cache/nudgelib``)."""

    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]).expanduser()
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "nudgelib-runs"
    return cache_dir() / "runs"


def find_plateau(rows: Sequence[dict], metrics: str | Sequence[str] = "reward_mean", *,
                 patience: int = 10, window: int = 5, min_delta: float = 0.0,
                 max_step: int = 0) -> int | None:
    """The first step of ``rows`` (a run's metrics) at which every metric in ``metrics`` has
    plateaued, by the same rule as a two-stage run (:class:`PlateauDetector`: patience and
    window in training steps, whatever each metric's logging period); else ``max_step`` if the
    rows reach it; else None.
    Use it to choose the GRPO checkpoint that NuRL starts from."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    dets = {m: PlateauDetector(patience, window=window, min_delta=min_delta) for m in names}
    for r in sorted(rows, key=lambda r: r["step"]):
        if feed_plateau_detectors(dets, r):
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


def pipeline_plan(preset_name: str) -> dict:
    """The GRPO -> NuRL run of notebooks 06/07 for a preset: its TrainConfig (validation on,
    plateau watched on training reward and validation pass rate), the number of steps, and the
    latest step at which NuRL takes over if GRPO has not plateaued by then."""
    plans = {name: p.pipeline for name, p in PRESETS.items() if p.pipeline}
    if preset_name not in plans:
        raise ConfigError(f"no pipeline plan for preset {preset_name!r}; expected one of "
                          f"{sorted(plans)}")
    steps, cap, every, (n_val, k_val) = plans[preset_name]
    cfg = get_train_config(preset_name, val_every=every, n_val_problems=n_val, val_samples=k_val)
    return {"config": cfg, "steps": steps, "max_switch_step": cap,
            "switch_metrics": ["reward_mean", "val_pass_rate"]}
