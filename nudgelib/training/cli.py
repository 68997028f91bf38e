"""``python -m nudgelib.training``: train one run from a preset or a JSON config, headless.

    python -m nudgelib.training --config toy-fast --steps 20 --out runs/toy [--seed S]
        [--save-every K] [--resume] [--nudging nurl] [--hint-bank DIR] [--set key=value ...]
        [--fork-from OTHER_RUN/checkpoints/step-NNNNNN]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from nudgelib.hints.bank import HintBankError
from nudgelib.nudging import STRATEGIES
from nudgelib.presets import TRAIN_PRESETS
from nudgelib.tasks.problems import DataFormatError, DataNotFound
from nudgelib.training.config import ConfigError, TrainConfig, get_train_config
from nudgelib.training.metrics_file import set_aside
from nudgelib.training.runs import (
    LOCK,
    MARKER,
    RunFolderError,
    RunLock,
    complete_checkpoints,
    read_record,
)
from nudgelib.training.trainer import (
    FORK_FILE,
    METRICS_FILE,
    Trainer,
    closed_on_error,
    resume_or_start,
)


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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.training",
                                 description=__doc__.split("\n")[0])
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


def _forked_from(out: Path) -> str | None:
    """The checkpoint ``out``'s run was forked from (its ``fork.json``), None if not forked.
    A damaged record is named, not read through: it is what checks a resume's --fork-from."""
    path = out / FORK_FILE
    if not path.is_file():
        return None
    fix = (f"it records which checkpoint this run was forked from: restore it, or move it "
           f"aside (mv {path} {path}.damaged) to resume without that check; nothing was changed")
    return read_record(path, "fork record", lambda r: isinstance(r.get("forked_from"), str),
                       'an object with "forked_from"', fix)["forked_from"]


def _resume_command(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return "python -m nudgelib.training " + " ".join(shlex.quote(a) for a in args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {args.steps}")
        out = Path(args.out)
        if (out / LOCK).exists():  # a live run there: name it before anything else
            probe = RunLock(out).acquire()
            if probe.replaced:
                print(f"note: {probe.replaced_note()}", file=sys.stderr)
            probe.release()
        ckpts = complete_checkpoints(out)
        if not args.resume and ((out / METRICS_FILE).exists() or ckpts):
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it (from its "
                              f"last checkpoint, or from step 0 if it stopped before its first) "
                              f"or choose another --out")
        restart = args.resume and not ckpts and not args.fork_from
        if restart and not (out / MARKER).is_file():
            raise ConfigError(f"--resume: {out} has no complete checkpoint to resume; nothing "
                              f"was changed (run without --resume to start a run there)")
        forked = _forked_from(out)
        if args.resume and ckpts and args.fork_from and forked != str(Path(args.fork_from)):
            raise ConfigError(f"--fork-from {args.fork_from}: {out} continues a run forked from "
                              f"{forked}; resume it without --fork-from, or fork into a new --out")
        if args.resume and ckpts:
            trainer = resume_or_start(cfg, out, progress=not args.quiet)
            print(f"resumed from {trainer.resumed_from} (step {trainer.step})", flush=True)
        else:
            trainer = Trainer(cfg, out, progress=not args.quiet, warm=not args.fork_from)
            if restart:  # killed before its first checkpoint: start again, the old rows kept
                kept = set_aside(out / METRICS_FILE, "before-restart")  # after the folder was claimed and locked
                print(f"{out} has no complete checkpoint (the run stopped before its first "
                      f"save): starting again from step 0"
                      + (f"; the earlier rows are kept in {kept}" if kept else ""), flush=True)
            if args.fork_from:
                with closed_on_error(trainer):
                    info = trainer.fork_from(args.fork_from)
                print(f"forked from {args.fork_from}: {json.dumps(info)}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        try:
            trainer.train(until_step=args.steps)
            adapter = trainer.export_adapter()
        except KeyboardInterrupt:
            ckpts = complete_checkpoints(out)
            where = (f"its last checkpoint is {ckpts[-1].name}" if ckpts else
                     "it has no checkpoint yet (--resume starts it again from step 0)")
            print(f"interrupted at step {trainer.step} of {args.steps}; {out}: {where}. "
                  f"Continue with: {_resume_command(argv)}", file=sys.stderr, flush=True)
            return 130
        finally:
            trainer.close()
    except (ConfigError, RunFolderError, HintBankError, DataFormatError, DataNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was trained. Run the same command "
              "again to start", file=sys.stderr, flush=True)
        return 130
    last = trainer.rows[-1] if trainer.rows else {}
    print(json.dumps({"step": trainer.step, "out": str(out), "adapter": str(adapter),
                      **{k: last.get(k) for k in ("reward_mean", "pass_rate", "frac_zero_std",
                                                  "frac_nudged", "stage")}}))
    return 0
