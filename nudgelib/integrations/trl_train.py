"""Train with TRL's GRPOTrainer + nudgelib's nudging, from nudgelib's presets, on 1..N devices.

    # one process (CPU or one GPU)
    python -m nudgelib.integrations.trl_train --config colab-t4 --steps 200 --out runs/trl-t4
    # several GPUs: DDP, or DeepSpeed ZeRO-2 (configs ship in nudgelib/integrations/accelerate/)
    accelerate launch --config_file ddp.yaml   -m nudgelib.integrations.trl_train --config large-gpu ...
    accelerate launch --config_file zero2.yaml -m nudgelib.integrations.trl_train --config large-gpu ...

The run folder gets ``run.json`` (config, TRL version, process count, backend), ``metrics.jsonl``
(one line per logged step, written by the main process only), TRL checkpoints
(``checkpoint-N``, each given a ``MANIFEST.json`` of its files' sizes and SHA-256 once written;
``--resume`` continues from the newest one that verifies, naming any damaged file it skips) and
``adapter/`` (a PEFT adapter with ``nudgelib_config.json``, loadable by
:class:`nudgelib.evaluate.ModelSuite`).

Hints: ``--hint-bank`` (a saved :class:`~nudgelib.hints.bank.HintBank`, e.g. self-hints written by
``python -m nudgelib.hints``) or, by default, reference hints (the first half of each GSM8K
solution; no model call).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from nudgelib.hints.bank import HintBank, HintBankError
from nudgelib.hints.generate import reference_hints
from nudgelib.integrations.trl import (
    TRL_STRATEGIES,
    TRL_TESTED,  # noqa: F401  (fails early, clearly, without TRL)
    NudgedGRPOTrainer,
    device_and_dtype,
    grpo_config,
    lora_config,
    reward_functions,
    trl_dataset,
)
from nudgelib.nudging import strategies_for
from nudgelib.policies.hf import nf4_config
from nudgelib.policies.models import load_model_and_tokenizer
from nudgelib.presets import TRAIN_PRESETS
from nudgelib.tasks.problems import DataFormatError, DataNotFound
from nudgelib.training.build import build_problems
from nudgelib.training.cli import config_from_args
from nudgelib.training.config import ConfigError
from nudgelib.training.metrics_file import scan_metric_rows, set_aside
from nudgelib.training.runs import (
    MANIFEST,
    RunFolderError,
    RunLock,
    claim_run_folder,
    fsync_path,
    newest_intact,
    read_json,
    verify_folder,
    write_atomic,
    write_manifest,
)

METRICS = "metrics.jsonl"
RUN_FILE = "run.json"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.integrations.trl_train",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True,
                    help=f"a preset ({', '.join(list(TRAIN_PRESETS)[2:])}) or a JSON file of "
                         f"TrainConfig fields")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps in all")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--save-every", type=int, help="checkpoint every K steps (default: the end)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a TrainConfig field (value parsed as JSON when it can be)")
    ap.add_argument("--nudging", choices=strategies_for("trl"),
                    help="default: the config's (none for the presets)")
    ap.add_argument("--hint-bank", help="a saved HintBank folder (default: reference hints)")
    ap.add_argument("--hint-type", help="which hints of the bank (default: the config's "
                                        "hint_type; partial_steps for reference hints)")
    ap.add_argument("--init-adapter", help="start from this PEFT adapter (e.g. a GRPO run's "
                                           "adapter/ for the NuRL stage)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ap.add_argument("--report-to", default="none", help="TRL/transformers report_to "
                                                         "(none, tensorboard, wandb...)")
    ap.add_argument("--nudge-log", action="store_true",
                    help="every process writes what nudging did to its rows "
                         "(nudge-rank<R>.jsonl), for inspection and tests")
    return ap


def _hints(cfg, args, problems):
    """(bank, hint_type) for the run; None when nudging is off."""

    if cfg.nudging == "none":
        return None, cfg.hint_type
    if args.hint_bank or cfg.hint_bank:
        return HintBank.load(args.hint_bank or cfg.hint_bank), args.hint_type or cfg.hint_type
    kind = args.hint_type or "partial_steps"
    if cfg.task not in ("arithmetic", "gsm8k", "math500"):
        raise ConfigError(f"reference hints need worked solutions (arithmetic, gsm8k, math500), not task "
                         f"{cfg.task!r}; pass --hint-bank")
    return reference_hints(problems, kind), kind


def _load_model(cfg, args, state):
    cuda, dtype = device_and_dtype(cfg)
    device = f"cuda:{state.local_process_index}" if cuda else "cpu"
    extra = {"quantization_config": nf4_config(dtype)} if cfg.load_in_4bit else {}
    with state.main_process_first():  # the offline checkpoint is converted once, on rank 0
        model, tok = load_model_and_tokenizer(cfg.model_id, dtype=dtype, device=device, **extra)
    peft_config = None
    if args.init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.init_adapter, is_trainable=True)
    elif cfg.lora_rank > 0:
        peft_config = lora_config(cfg)
    return model, tok, peft_config


def _callbacks(out: Path):
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """One JSON line per log call (fsynced), and a manifest for each checkpoint once
        transformers has written it; from the main process only."""

        def on_log(self, targs, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

        def on_save(self, targs, state, control, **kw):
            from accelerate import PartialState

            PartialState().wait_for_everyone()  # every rank's files (rng states, shards) written
            ckpt = out / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                write_manifest(ckpt)
                fsync_path(out)

    return [MetricsFile()]


def resume_checkpoint(out: Path, *, manifests: bool, report=print) -> Path | None:
    """The newest TRL checkpoint of ``out`` whose files match its manifest (None: none yet),
    by :func:`nudgelib.training.runs.newest_intact`: a damaged one is skipped and named through
    ``report``; one without a manifest is damaged too when the run writes manifests
    (``manifests``: its save was cut short), trusted otherwise (a run of an older nudgelib).
    Every checkpoint damaged: RunFolderError."""
    found = sorted((p for p in out.glob("checkpoint-*") if p.is_dir()
                    and p.name.removeprefix("checkpoint-").isdigit()),
                   key=lambda p: int(p.name.removeprefix("checkpoint-")))

    def problem_of(ckpt: Path) -> str | None:
        return verify_folder(ckpt) if manifests or (ckpt / MANIFEST).exists() else None

    ckpt = newest_intact(found, problem_of, report=lambda m: report(f"note: {m}"))
    if found and ckpt is None:
        raise RunFolderError(f"{out}: no checkpoint verifies (see the note above); nothing was "
                             f"changed. Move the run folder aside to start afresh")
    return ckpt


def _write_nudge_log(trainer, out: Path):
    """Wrap the trainer so each process appends its nudging records to nudge-rank<R>.jsonl."""
    rank = trainer.accelerator.process_index
    inner = trainer._generate_and_score_completions

    def logged(inputs):
        result = inner(inputs)
        rec = trainer.last_nudge
        if rec is not None:
            row = {**dataclasses.asdict(rec), "rank": rank}
            with open(out / f"nudge-rank{rank}.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        return result

    trainer._generate_and_score_completions = logged


def run(args) -> dict:
    import trl
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    cfg = config_from_args(args)
    if cfg.nudging not in TRL_STRATEGIES:
        raise ConfigError(f"TrainConfig.nudging={cfg.nudging!r} is not available on TRL; "
                          f"expected one of {', '.join(TRL_STRATEGIES)} (the others run in "
                          f"nudgelib.training.trainer)")
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    # cpu=True is what makes accelerate pick MULTI_CPU (gloo) for several CPU processes
    state = PartialState(cpu=not device_and_dtype(cfg)[0])
    if cfg.load_in_4bit and state.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError("TrainConfig.load_in_4bit=True does not combine with DeepSpeed; "
                          "use the DDP config (ddp.yaml) or --set load_in_4bit=false")
    out = Path(args.out)
    has_checkpoint = out.is_dir() and any(out.glob("checkpoint-*"))
    if not args.resume and ((out / METRICS).exists() or has_checkpoint):
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose "
                          f"another --out")
    problems = build_problems(cfg)
    if state.is_main_process:  # one writer per run folder (all ranks are that one run)

        claim_run_folder(out, cfg.to_dict(), problems)
        RunLock(out).acquire()  # held until the process exits
    state.wait_for_everyone()
    bank, hint_type = _hints(cfg, args, problems)
    model, tok, peft_config = _load_model(cfg, args, state)
    funcs, weights = reward_functions(cfg, tok)
    targs = grpo_config(cfg, out, max_steps=args.steps, num_processes=state.num_processes,
                        reward_weights=weights, report_to=args.report_to)
    dataset = trl_dataset(problems, instruction=cfg.instruction, hints=bank, hint_type=hint_type)
    trainer = NudgedGRPOTrainer(model=model, processing_class=tok, reward_funcs=funcs,
                                args=targs, train_dataset=dataset, peft_config=peft_config,
                                nudging=cfg.nudging, hint_type=hint_type,
                                callbacks=_callbacks(out))
    if args.nudge_log:
        _write_nudge_log(trainer, out)
    resume = None
    if args.resume and has_checkpoint:  # every process picks the same one (same files)
        earlier = _read_run_file(out)
        resume = resume_checkpoint(out, manifests=bool(earlier.get("checkpoint_manifests")),
                                   report=print if state.is_main_process else (lambda m: None))
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / RUN_FILE, json.dumps({
            "config": cfg.to_dict(), "trl_version": trl.__version__, "checkpoint_manifests": True,
            "num_processes": state.num_processes, "distributed_type": str(state.distributed_type),
            "backend": state.backend, "hint_type": hint_type, "hints": len(bank) if bank else 0,
            "grpo": {k: getattr(targs, k) for k in (
                "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
                "max_completion_length", "loss_type", "scale_rewards", "learning_rate")},
        }, indent=1))
    state.wait_for_everyone()
    if resume is not None and state.is_main_process:
        print(f"resuming from {resume}", flush=True)
        _trim_metrics(out, int(resume.name.removeprefix("checkpoint-")))
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    adapter = out / "adapter"
    trainer.save_model(str(adapter))  # every process calls it (collective under DeepSpeed)
    if state.is_main_process:
        (adapter / "nudgelib_config.json").write_text(json.dumps(
            {**cfg.to_dict(), "step": trainer.state.global_step, "engine": "trl"}, indent=1))
    return {"step": trainer.state.global_step, "out": str(out), "adapter": str(adapter),
            **trainer.nudge_totals}


def _trim_metrics(out: Path, step: int) -> None:
    """Rows logged after the checkpoint a resume starts from are logged again: the file keeps
    the rows up to it, and the whole earlier file is set aside beside it (never deleted)."""
    rows, bad = scan_metric_rows(out / METRICS, step)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if (out / METRICS).is_file() and (bad or (out / METRICS).read_text(errors="replace") != text):
        aside = set_aside(out / METRICS, "before-resume")
        write_atomic(out / METRICS, text)
        print(f"note: {METRICS} keeps its rows up to step {step}; the earlier file is kept as "
              f"{aside.name}", flush=True)


def _read_run_file(out: Path) -> dict:
    """``run.json`` of an earlier start, or {} (none, or unreadable: it is written again)."""
    try:
        meta = read_json(out / RUN_FILE)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (ConfigError, RunFolderError, HintBankError, DataFormatError, DataNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
        print(f"interrupted; {args.out} keeps its checkpoints. Continue with: python -m "
              f"nudgelib.integrations.trl_train {' '.join(again)} --resume", file=sys.stderr)
        return 130
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
