"""Fault injection over every file a resumed run reads: each file of a real run folder is
replaced by damaged bytes of every kind (empty, cut in half, one byte flipped, random bytes,
bytes that are not UTF-8, UTF-16, a UTF-8 byte-order mark, and for JSON files every other
JSON shape), then ``python -m nudgelib.training ... --resume`` runs on it.

What must hold in every case: no traceback; either the run refuses (rc 2) with a message that
names the damaged file and leaves every file as it was, or it continues (rc 0) with nothing
lost — metric rows 1..3 exactly as before, step 4 after them — having said what it did about
the damaged file (a checkpoint falls back to the one before it; a damaged metrics file is
rebuilt from the checkpoint and kept beside it, never deleted). Files the run only writes
(the root ``config.json``) or whose content carries no data (``COMPLETE``) are checked to be
harmless. The table toy keeps each case to a fraction of a second (~80 cases).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from nudgelib.training.cli import main
from nudgelib.training.runs import LOCK, MARKER
from nudgelib.training.trainer import METRICS_FILE

CKPT = "checkpoints/step-000003"
JSON_SHAPES = {"json-list": "[]", "json-null": "null", "json-number": "42", "json-string": '"x"',
               "json-object": "{}",
               "json-wrong-types": json.dumps({"step": "three", "nudgelib_run": [1], "files": 5,
                                               "problems": None, "pid": None})}


def _damage(rel: str, data: bytes) -> dict[str, bytes]:
    """Every kind of damage for a file that held ``data``."""
    flipped = bytearray(data)
    if flipped:
        flipped[len(flipped) // 2] ^= 0xFF
    out = {"empty": b"", "truncated": data[: len(data) // 2], "flipped": bytes(flipped),
           "random": random.Random(len(data)).randbytes(max(64, len(data))),
           "not-utf8": b"\xff\xfe\xfd" + data[3:]}
    if rel.endswith((".json", ".jsonl", ".lock")):
        text = data.decode()
        out["utf16"] = text.encode("utf-16")
        out["bom-utf8"] = b"\xef\xbb\xbf" + data
        newline = "\n" if rel.endswith(".jsonl") else ""
        out.update({k: (v + newline).encode() for k, v in JSON_SHAPES.items()})
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 3-step run with a checkpoint every step (two kept) and a stale lock of a dead
    process on this host, as a kill leaves it."""
    run = tmp_path_factory.mktemp("sweep") / "run"
    assert main(["--config", "toy-table", "--steps", "3", "--out", str(run), "--quiet",
                 "--save-every", "1"]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                        "since": "earlier", "token": "old"}))
    return run


FILES = [MARKER, "config.json", METRICS_FILE, LOCK, f"{CKPT}/COMPLETE", f"{CKPT}/MANIFEST.json",
         f"{CKPT}/config.json", f"{CKPT}/policy/policy.pt", f"{CKPT}/trainer_state.pt"]


def _cases():
    # the kinds of damage depend only on the file's type; the bytes are made from the real file
    kinds_binary = ["empty", "truncated", "flipped", "random", "not-utf8"]
    kinds_text = kinds_binary + ["utf16", "bom-utf8", *JSON_SHAPES]
    for rel in FILES:
        for kind in (kinds_text if rel.endswith((".json", ".jsonl", ".lock")) else kinds_binary):
            yield pytest.param(rel, kind, id=f"{rel.replace('/', '|')}-{kind}")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / METRICS_FILE).read_text().splitlines()]


def _content(rows: list[dict]) -> list[str]:
    """Rows without their timings (a step redone after a fallback takes other seconds)."""
    return [json.dumps({k: v for k, v in r.items() if not k.startswith("t_")}, sort_keys=True)
            for r in rows]


@pytest.mark.parametrize("rel,kind", list(_cases()))
def test_a_damaged_file_is_refused_by_name_or_survived_with_nothing_lost(pristine, tmp_path, rel,
                                                                          kind):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    before_rows = _content(_rows(pristine))
    bad = _damage(rel, (pristine / rel).read_bytes())[kind]
    (run / rel).write_bytes(bad)
    before = _snapshot(run)
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        rc = main(["--config", "toy-table", "--steps", "4", "--out", str(run), "--quiet",
                   "--save-every", "1", "--resume"])
    said = err.getvalue() + "\n".join(str(w.message) for w in caught)
    name = Path(rel).name
    assert "Traceback" not in said, said
    assert rc in (0, 2), (rc, said)
    if rc == 2:  # refused: the file is named, and nothing in the folder changed
        assert name in said, said
        after = _snapshot(run)
        if LOCK not in after:  # the stale lock of a dead process may go, and that is said
            assert "replaced" in said, said
            before.pop(LOCK, None)
        assert after == before
        return
    # continued: rows 1..3 as they were (a step redone from the checkpoint before is the same
    # step: the toy is bit-exact), then step 4
    assert _content(_rows(run)[:3]) == before_rows, said
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]
    if rel == METRICS_FILE and bad != (pristine / rel).read_bytes():
        if kind != "bom-utf8":  # a byte-order mark is read through; anything else is kept aside
            aside = list(run.glob(f"{METRICS_FILE}.damaged-*"))
            assert len(aside) == 1 and aside[0].read_bytes() == bad, said
            assert aside[0].name in said
    elif rel.startswith(CKPT) and name != "COMPLETE":  # fell back to step 2, and said so
        assert name in said and "resuming from step-000002" in said, said
    elif rel == LOCK and kind != "empty":  # an empty record is a released lock
        assert "lock" in said, said
    elif rel == "config.json":  # written by the run, never read: valid again afterwards
        assert json.loads((run / rel).read_text())["name"] == "toy-table"


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """A NuRL run forked from a GRPO run's step-2 checkpoint, trained to step 3."""
    root = tmp_path_factory.mktemp("fork")
    assert main(["--config", "toy-table", "--steps", "2", "--out", str(root / "grpo"), "--quiet",
                 "--save-every", "1"]) == 0
    ckpt = root / "grpo" / "checkpoints" / "step-000002"
    args = ["--config", "toy-table", "--nudging", "nurl", "--out", str(root / "nurl"), "--quiet",
            "--save-every", "1", "--fork-from", str(ckpt)]
    assert main([*args, "--steps", "3"]) == 0
    return root / "nurl", args


@pytest.mark.parametrize("kind", ["empty", "truncated", "flipped", "random", "not-utf8", "utf16",
                                  "bom-utf8", *JSON_SHAPES])
def test_a_damaged_fork_record_is_named_and_nothing_changes(forked, tmp_path, kind):
    from nudgelib.training.trainer import FORK_FILE

    source, args = forked
    run = tmp_path / "nurl"
    shutil.copytree(source, run)
    bad = _damage(FORK_FILE, (source / FORK_FILE).read_bytes())[kind]
    (run / FORK_FILE).write_bytes(bad)
    before = _snapshot(run)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([*[str(run) if a == str(source) else a for a in args], "--steps", "4", "--resume"])
    said = err.getvalue()
    assert "Traceback" not in said, said
    if rc == 0:  # still a fork record naming the same checkpoint (e.g. a flipped byte elsewhere)
        assert json.loads((run / FORK_FILE).read_text())["forked_from"] == args[-1]
        assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]
    else:
        assert rc == 2 and FORK_FILE in said and "nothing was changed" in said, said
        assert _snapshot(run) == before


# ----------------------------------------------------------------------------- hint banks

BANK = "my-hints"  # relative: the run's config names the bank by this path, copies included
BANK_FILES = ["dataset_info.json", "state.json", "data-00000-of-00001.arrow", "generation.json",
              "MANIFEST.json"]
BANK_ARGS = ["--config", "toy-table", "--nudging", "nurl", "--out", "run", "--quiet",
             "--save-every", "1", "--hint-bank", BANK]


def _bank_cases(saved_by):
    kinds_binary = ["empty", "truncated", "flipped", "random", "not-utf8"]
    for rel in BANK_FILES:
        if saved_by == "save_to_disk" and rel in ("generation.json", "MANIFEST.json"):
            continue  # a bank saved the plain datasets way has neither
        kinds = kinds_binary + (["utf16", "bom-utf8", *JSON_SHAPES] if rel.endswith(".json")
                                else [])
        for kind in kinds:
            yield pytest.param(saved_by, rel, kind, id=f"{saved_by}-{rel}-{kind}")


@pytest.fixture(scope="module")
def banked(tmp_path_factory):
    """For each way a user saves a bank (``HintBank.save``: with a manifest;
    ``dataset.save_to_disk``: without), a folder holding the bank (the table toy's built-in
    hints) and a 3-step NuRL run trained on it, a checkpoint every step."""
    import os

    from nudgelib.hints.bank import HintBank
    from nudgelib.toy import toy_hint
    from nudgelib.training.build import build_problems
    from nudgelib.training.config import get_train_config

    problems = build_problems(get_train_config("toy-table"))
    bank = HintBank.from_records([{"problem_id": p.id, "hint_type": "abstract",
                                   "hint": toy_hint(p, "abstract")} for p in problems],
                                 {"hint_type": "abstract", "source": "toy", "model_calls": 0,
                                  "tokens": 0})
    roots, here = {}, os.getcwd()
    for saved_by in ("save", "save_to_disk"):
        root = tmp_path_factory.mktemp(saved_by)
        (bank.save if saved_by == "save" else bank.dataset.save_to_disk)(str(root / BANK))
        os.chdir(root)
        try:
            assert main([*BANK_ARGS, "--steps", "3"]) == 0
        finally:
            os.chdir(here)
        roots[saved_by] = root
    return roots


@pytest.mark.parametrize("saved_by,rel,kind",
                         [*_bank_cases("save"), *_bank_cases("save_to_disk")])
def test_a_damaged_user_hint_bank_is_refused_by_name_or_gives_the_same_hints(
        banked, tmp_path, monkeypatch, saved_by, rel, kind):
    """A bank with a manifest: any damage to any of its files is refused, naming the file. A
    bank without one: refused (unreadable, or other hints than the checkpoints were trained
    with: the run records the bank's fingerprint), or resumed when the hints it serves are
    the same (damage to metadata the datasets library does not need)."""
    shutil.copytree(banked[saved_by], tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / BANK / rel
    bad = _damage(rel, target.read_bytes())[kind]
    target.write_bytes(bad)
    before = _snapshot(tmp_path)
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        rc = main([*BANK_ARGS, "--steps", "4", "--resume"])
    said = err.getvalue() + "\n".join(str(w.message) for w in caught)
    assert "Traceback" not in said, said
    if saved_by == "save":  # the manifest catches everything, naming the file
        assert rc == 2 and f"hint bank {BANK}" in said and rel in said, said
    else:
        assert rc in (0, 2), said
        assert rc == 0 or f"hint bank {BANK}" in said, said
    if rc == 2:
        assert _snapshot(tmp_path) == before
        return
    run = tmp_path / "run"
    assert _content(_rows(run)[:3]) == _content(_rows(banked[saved_by] / "run")), said
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]


def test_an_edited_hint_in_a_plain_bank_stops_the_resume_and_a_fork_takes_the_new_hints(
        banked, tmp_path, monkeypatch, capsys):
    """No manifest to catch it: one hint's text changed (same length, a valid Arrow file) is
    caught by the fingerprint the checkpoints hold; the message offers the fork, which works."""
    import datasets

    shutil.copytree(banked["save_to_disk"], tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    ds = datasets.load_from_disk(BANK)
    rows, features = ds.to_dict(), ds.features
    assert rows["hint"][0] != "answer 0"
    rows["hint"][0] = "answer 0"
    del ds
    shutil.rmtree(BANK)
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(BANK)
    before = _snapshot(tmp_path)
    assert main([*BANK_ARGS, "--steps", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"hint bank {BANK}: its hints differ" in err and "--fork-from" in err, err
    assert _snapshot(tmp_path) == before
    fork = [a if a != "run" else "fork" for a in BANK_ARGS]
    assert main([*fork, "--steps", "4", "--fork-from", "run/checkpoints/step-000003"]) == 0
    assert [r["step"] for r in _rows(tmp_path / "fork")] == [1, 2, 3, 4]


@pytest.mark.parametrize("rel,kind", [
    pytest.param(rel, kind, id=f"{rel}-{kind}") for rel in BANK_FILES
    for kind in ["empty", "truncated", "flipped", "random", "not-utf8"]
    + (["utf16", "bom-utf8", *JSON_SHAPES] if rel.endswith(".json") else [])])
def test_a_damaged_bank_in_the_run_folder_is_set_aside_and_made_again(tmp_path, rel, kind):
    """The bank a run writes for itself (teacher hints here; self-hints alike) is checked
    against its manifest when the run resumes: damaged, it is kept aside under a name of its
    own, never overwritten, and the same hints are made again."""
    from nudgelib.tasks.arithmetic import arithmetic_problems
    from nudgelib.training.build import build_hints
    from nudgelib.training.config import get_train_config

    problems = arithmetic_problems({"chain": 4})
    cfg = get_train_config("cpu-fast", nudging="nurl", hint_source="reference")
    bank = build_hints(cfg, ["partial_steps"], problems, None, tmp_path)
    target = tmp_path / "hint_bank" / rel
    bad = _damage(rel, target.read_bytes())[kind]
    target.write_bytes(bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = build_hints(cfg, ["partial_steps"], problems, None, tmp_path)
    said = "\n".join(str(w.message) for w in caught)
    aside = list(tmp_path.glob("hint_bank.damaged-*"))
    assert len(aside) == 1 and (aside[0] / rel).read_bytes() == bad, said
    assert rel in said and aside[0].name in said and "made again" in said, said
    assert again.fingerprint() == bank.fingerprint()
    assert again.records() == bank.records()
