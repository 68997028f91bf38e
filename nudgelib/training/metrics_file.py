"""A run's ``metrics.jsonl`` read under damage, and files set aside instead of deleted: the
helpers :mod:`nudgelib.training.trainer` and the CLI use when a resume meets a metrics file
that is cut, damaged or left from an attempt before (docs/runs.md)."""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path

from nudgelib.training.runs import fsync_path


def set_aside(path: Path, why: str) -> Path | None:
    """Rename ``path`` (a file or a folder) to ``<name>.<why>-<time>`` beside it, a name of its
    own (nothing is deleted); None if there is no such path."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    path.rename(target)
    fsync_path(path.parent)
    return target


def scan_metric_rows(source: Path, up_to_step: int) -> tuple[list[dict], list[int]]:
    """(the rows of ``metrics.jsonl`` for steps 1..``up_to_step``, the numbers of the lines that
    are not metric rows). Any bytes: undecodable bytes are replaced, a UTF-8 byte-order mark is
    skipped, a line that is not a JSON object with an integer ``step`` is a bad line."""
    kept, bad = [], []
    source = Path(source)
    if source.is_file():
        text = source.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
        for n, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
                step = row["step"] if isinstance(row, dict) else None
                if not isinstance(step, int) or isinstance(step, bool):
                    raise ValueError("no integer step")
            except (ValueError, KeyError, TypeError, RecursionError):
                bad.append(n)
                continue
            if step <= up_to_step:
                kept.append(row)
    return kept, bad


def read_metric_rows(source: Path, up_to_step: int) -> list[dict]:
    """The rows of ``metrics.jsonl`` for steps 1..``up_to_step``. A line that is not a metric
    row (the last one cut by a kill, or a damaged one) is reported with its number, as are
    missing or repeated steps; nothing is dropped silently."""
    source = Path(source)
    kept, bad = scan_metric_rows(source, up_to_step)
    if bad:
        warnings.warn(f"{source}: line(s) {bad[:8]}{'…' if len(bad) > 8 else ''} are not metric "
                      f"rows (cut by a kill, or damaged) and were left out; {len(kept)} rows kept",
                      stacklevel=3)
    steps = [r["step"] for r in kept]
    if source.is_file() and steps != list(range(1, up_to_step + 1)):
        warnings.warn(f"{source}: the rows up to step {up_to_step} are steps {steps[:8]}"
                      f"{'…' if len(steps) > 8 else ''}, not 1..{up_to_step}: some are missing "
                      f"or repeated", stacklevel=3)
    return kept


def restore_metric_rows(source: Path, step: int, saved: list[dict] | None,
                        forked_from: str | None = None) -> list[dict]:
    """The rows of ``source`` up to the loaded ``step``, as a resumed (or forked) run's
    history. ``saved``: the rows the checkpoint holds (verified with it); when they cover every
    step they are the history, and a metrics file of the run's own (``forked_from`` None) that
    disagrees with them (damaged, cut, edited) is set aside, never overwritten. A fork's rows
    are marked with the checkpoint they came from."""
    complete = saved is not None and [r.get("step") for r in saved] == list(range(1, step + 1))
    if not complete:
        kept = read_metric_rows(source, step)
    else:
        kept = saved
        file_rows, bad = scan_metric_rows(source, step)
        same = not bad and [json.dumps(r, sort_keys=True) for r in file_rows] == \
            [json.dumps(r, sort_keys=True) for r in saved]
        if not same and forked_from is None and Path(source).is_file():
            aside = set_aside(Path(source), "damaged")
            warnings.warn(f"{source} disagreed with checkpoint step {step} ({len(bad)} "
                          f"unreadable line(s), {len(file_rows)} rows up to the step, the "
                          f"checkpoint holds {len(saved)}): the checkpoint's rows are kept and "
                          f"the file is set aside as {aside.name}", stacklevel=4)
    return [{**r, "forked_from": forked_from} if forked_from else r for r in kept]
