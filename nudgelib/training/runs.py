"""Run folders that never lose a learner's work.

A run folder is recognised by the marker nudgelib writes into it (:data:`MARKER`: the config's
hash, the training problems' hash, when it was made); any other non-empty folder is refused
before anything is written. One process writes a run at a time: :class:`RunLock` holds an
exclusive lock file (pid, host, start) for the life of a run. Checkpoints and the hint bank are
written into a temporary folder, given a manifest of every file's size and SHA-256 (written
last, fsynced), then renamed into place; :func:`verify_folder` checks a manifest on load, so a
damaged checkpoint is named and skipped instead of loaded.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import shutil
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

MARKER = "nudgelib-run.json"
LOCK = "nudgelib-run.lock"
MANIFEST = "MANIFEST.json"


class RunFolderError(Exception):
    """A run folder that cannot be used as asked (not a run, locked, damaged...). Not a
    configuration error: the config may be fine and the folder not; the CLIs catch both."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def problems_hash(problems: Iterable) -> str:
    """SHA-256 over the training problems' ids, questions and gold answers, in order."""
    return _hash([[p.id, p.question, p.answer] for p in problems])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_record(path: Path, what: str, fits, expected: str, fix: str) -> dict:
    """The JSON object in ``path`` (:func:`read_json`), for which ``fits(record)`` holds; else
    RunFolderError naming the file, ``what`` it is, the ``expected`` shape and the ``fix``."""
    try:
        record = read_json(path)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: unreadable {what} ({type(err).__name__}: "
                             f"{str(err)[:120]}); {fix}") from err
    if not (isinstance(record, dict) and fits(record)):
        raise RunFolderError(f"{path}: not a {what} (expected {expected}); {fix}")
    return record


def read_json(path: Path):
    """The JSON value in ``path``, read as UTF-8. Raises OSError (missing, unreadable) or
    ValueError (not UTF-8, not JSON, nested too deeply to parse): the caller names the file
    and checks the value's shape."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except RecursionError as err:
        raise ValueError("JSON nested too deeply to read") from err


def claim_run_folder(out: Path, cfg_dict: dict, problems) -> dict:
    """Make ``out`` this run's folder, or check that it already is.

    - missing or empty: created, and the marker written;
    - holding the marker: the training problems must be the ones it was made with (a changed
      ``NUDGE_DATA_DIR`` with the same ids is refused, naming the first problem that differs);
    - a folder of an older nudgelib (complete checkpoints but no marker): adopted;
    - anything else: refused, before anything is written.

    Returns the marker."""
    out = Path(out)
    problems = list(problems)
    marker_path = out / MARKER
    if marker_path.is_file():
        fix = (f"if this is a nudgelib run folder, restore the file, or move it aside (mv "
               f"{marker_path} {marker_path}.damaged) and run again: a folder with complete "
               f"checkpoints and no marker is adopted and gets a new one; else start a new --out")
        marker = read_record(
            marker_path, "nudgelib run marker",
            lambda m: (m.get("nudgelib_run") == 1 and isinstance(m.get("problems_hash"), str)
                       and isinstance(m.get("problems"), list)),
            "an object with nudgelib_run 1, problems_hash and problems", fix)
        want = problems_hash(problems)
        if marker.get("problems_hash") != want:
            raise RunFolderError(
                f"{out} was made with other training problems than this run's "
                f"({_first_difference(marker.get('problems', []), problems)}); the data folder "
                f"(NUDGE_DATA_DIR) or the task config changed. Resume with the same data, or "
                f"start a new run folder")
        return marker
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder: choose another run folder")
    if out.is_dir():  # a marker write cut short by a kill leaves only nudgelib's temp file
        (out / f".tmp-{MARKER}").unlink(missing_ok=True)
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not _older_nudgelib_run(out):
        raise RunFolderError(
            f"{out} is not empty and is not a nudgelib run folder (no {MARKER}; it holds "
            f"{', '.join(entries[:5])}{'…' if len(entries) > 5 else ''}); nothing was written. "
            f"Choose a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker = {"nudgelib_run": 1, "created": _now(), "config_hash": _hash(cfg_dict),
                  "problems_hash": problems_hash(problems),
                  "problems": [[p.id, _hash([p.question, p.answer])[:16]] for p in problems]}
        write_atomic(marker_path, json.dumps(marker, indent=1))
    except OSError as err:
        raise RunFolderError(f"cannot write the run folder {out}: {_os_reason(err)}") from err
    return marker


def _older_nudgelib_run(out: Path) -> bool:
    """A run folder of an older nudgelib (before markers): nudgelib's own complete checkpoints,
    or the TRL script's ``run.json`` (config and TRL version) beside TRL's checkpoints. Another
    trainer's folder (any ``checkpoint-*/trainer_state.json`` alone, as Hugging Face's Trainer
    writes) is not one."""
    if any((p / "COMPLETE").is_file() for p in out.glob("checkpoints/step-*")):
        return True
    try:
        meta = read_json(out / "run.json")
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and {"config", "trl_version"} <= set(meta)
            and any((p / "trainer_state.json").is_file() for p in out.glob("checkpoint-*")))


def check_folder_present(out: Path) -> None:
    """Refuse to write into a run folder that vanished (or lost its marker) while the run was
    writing it: recreating it would make a folder without marker or lock, and a later resume a
    second writer."""
    if not (Path(out) / MARKER).is_file():
        raise RunFolderError(
            f"the run folder {out} (or its {MARKER}) vanished while this run was writing it; "
            f"nothing was recreated and this run stops here. Restore the folder to resume it, "
            f"or start a new run folder")


def _first_difference(saved: list, problems: list) -> str:
    now = {p.id: _hash([p.question, p.answer])[:16] for p in problems}
    for pid, digest in saved:
        if pid not in now:
            return f"problem {pid!r} is no longer in the training set"
        if now[pid] != digest:
            return f"problem {pid!r} has another question or answer now"
    if len(saved) != len(problems):
        return f"{len(saved)} problems then, {len(problems)} now"
    return "the same problems in another order"


def _os_reason(err: OSError) -> str:
    import errno

    if err.errno == errno.ENOSPC:
        return f"no space left on the device ({err.filename or ''})"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied ({err.filename or ''})"
    return str(err)


# ----------------------------------------------------------------------------- the lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[str, RunLock] = {}
"""The locks this process holds, by path: a second acquire in this process takes the lock over
(a notebook that re-runs its training cell)."""


class RunLock:
    """An exclusive lock on a run folder (``LOCK``), holding pid, host, start time and a token.

    The lock is an advisory ``fcntl.flock`` on the lock file, taken without waiting, so two
    processes that start at the same moment cannot both hold it, and the kernel drops it when
    its process dies (a kill, SIGTERM, a crash). The file's record names the holder for the
    error message. Under the flock the record is checked too: a record of a live process that
    does not hold the flock (another host, an older nudgelib) still refuses; one of a process
    that is gone (same host) is stale, reported (``replaced``) and replaced; one of this very
    process is taken over. Where the file system has no flock, the older scheme is used: the
    file created with ``O_EXCL``, a stale one removed and created again."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.held = False
        self.token = ""
        self.replaced: dict | None = None  # the stale lock this one replaced, if any
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import uuid

        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(),
              "token": uuid.uuid4().hex}  # whose lock it is, even within one process
        self.token = me["token"]
        key = str(self.path.resolve())
        mine = _HELD.get(key)
        if mine is not None and mine.held and mine._fd is not None:  # this process: take over
            self._fd, mine._fd, mine.held = mine._fd, None, False
            self._write(me)
            return self._done(key)
        try:
            import fcntl
        except ImportError:  # not POSIX
            return self._acquire_exclusive(me)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunFolderError(f"cannot lock {self.path.parent}: {_os_reason(err)}") \
                    from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._in_use(self._holder()) from None
            except OSError:  # no flock on this file system: the O_EXCL scheme
                os.close(fd)
                return self._acquire_exclusive(me)
            try:  # the file we locked must still be the one at the path (not unlinked since)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = self._holder()
            # an unreadable record under a flock we now hold: no live process on this host
            # holds the lock, and the record names no other host
            if holder and not holder.get("unreadable") and not self._stale(holder, me):
                os.close(fd)
                raise self._in_use(holder)
            if holder and holder.get("pid") != me["pid"]:
                self.replaced = holder
            self._fd = fd
            self._write(me)
            return self._done(key)
        raise RunFolderError(f"could not take the lock {self.path}: it keeps changing hands")

    def replaced_note(self) -> str | None:
        """What :meth:`acquire` replaced, in words (None: nothing)."""
        r = self.replaced
        if not r:
            return None
        if r.get("unreadable"):
            return f"replaced the unreadable lock file {self.path} (no run held it)"
        return f"replaced the lock of pid {r.get('pid')} on {r.get('host')} (no longer running)"

    @staticmethod
    def _stale(holder: dict, me: dict) -> bool:
        """A holder record that no live process stands behind (or this process's own)."""
        if holder.get("host") != me["host"]:
            return False
        try:
            pid = int(holder.get("pid"))
        except (TypeError, ValueError):
            return False
        return pid == me["pid"] or not _pid_alive(pid)

    def _in_use(self, holder: dict | None) -> RunFolderError:
        holder = holder or {"pid": "?", "host": "?", "since": "?"}
        return RunFolderError(
            f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
            f"since {holder.get('since')} (lock file {self.path}). Wait for that run to end; if "
            f"it is gone (a dead Colab runtime, another machine), delete the lock file")

    def _write(self, me: dict) -> None:
        data = json.dumps(me).encode()
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def _done(self, key: str) -> RunLock:
        self.held = True
        _HELD[key] = self
        import atexit

        atexit.register(self.release)  # a normal exit leaves no lock file behind
        return self

    def _acquire_exclusive(self, me: dict) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between our two looks
                if self._stale(holder, me):
                    if holder.get("pid") != me["pid"]:
                        self.replaced = holder
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._in_use(holder) from None
            except OSError as err:
                raise RunFolderError(f"cannot lock {self.path.parent}: {_os_reason(err)}") \
                    from err
            self._fd = fd
            self._write(me)
            return self._done(str(self.path.resolve()))
        raise RunFolderError(f"could not take the lock {self.path}: it keeps changing hands")

    def _holder(self) -> dict | None:
        unreadable = {"pid": "?", "host": "?", "since": "? (unreadable lock file)", "unreadable": True}
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # ValueError: bytes that are not UTF-8
            return unreadable
        if not text.strip():
            return None  # an empty record: released, or a lock file whose write was cut short
        try:
            holder = json.loads(text)
        except (ValueError, RecursionError):
            return unreadable
        return holder if isinstance(holder, dict) and "pid" in holder else unreadable

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("token") == self.token:  # not a lock taken over since
                self.path.unlink(missing_ok=True)  # while the flock is held: no one waits on it
            if self._fd is not None:
                os.close(self._fd)  # drops the flock
                self._fd = None
            self.held = False
            if _HELD.get(str(self.path.resolve())) is self:
                del _HELD[str(self.path.resolve())]

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsynced, then renamed."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_path(path.parent)


def write_manifest(folder: Path, *, last: str | None = None) -> dict:
    """fsync every file under ``folder``, then write ``MANIFEST`` (sizes and SHA-256 of them
    all) and, when given, the file ``last`` (e.g. a completeness marker) after it."""
    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, last):
            fsync_path(p)
            files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size,
                                                       "sha256": _sha256(p)}
    manifest = {"files": files}
    for name, text in ((MANIFEST, json.dumps(manifest, indent=1)),
                       *(((last, "complete\n"),) if last else ())):
        with open(folder / name, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    for d in sorted({p.parent for p in folder.rglob("*")} | {folder}, reverse=True):
        fsync_path(d)
    return manifest


def verify_folder(folder: Path) -> str | None:
    """None when every file of ``folder``'s manifest is there with its size and checksum;
    else what is wrong, naming the file. A folder without a manifest (written by an older
    nudgelib) is reported as such; so is a manifest that is not one (any bytes, any JSON shape,
    any encoding: it must be a UTF-8 object whose ``files`` map names to size and checksum)."""
    folder = Path(folder)
    where = folder / MANIFEST
    try:
        manifest = read_json(where)
    except FileNotFoundError:
        return f"{where} is missing (written by an older nudgelib, or damaged)"
    except (OSError, ValueError) as err:
        return f"{where} is unreadable ({type(err).__name__}: {str(err)[:120]})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str) for k, v in files.items()):
        return (f"{where} is not a manifest (expected an object whose \"files\" maps each file to "
                f"its size and sha256; found {type(manifest).__name__})")
    for rel, want in files.items():
        p = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return f"{where} names a file outside its folder ({rel!r})"
        if not p.is_file():
            return f"{p} is missing"
        size = p.stat().st_size
        if size != want["size"]:
            return f"{p} has {size} bytes, its manifest says {want['size']} (truncated?)"
        if _sha256(p) != want["sha256"]:
            return f"{p} does not match its checksum (damaged bytes)"
    return None


def save_folder_atomic(final: Path, write, *, last: str | None = None) -> Path:
    """``write(tmp)`` fills a temporary folder beside ``final``; it gets a manifest, then
    replaces ``final`` by a rename (the parent folder fsynced). A kill at any point leaves
    either the old ``final`` or the new one, never a half-written one."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    write_manifest(tmp, last=last)
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    fsync_path(final.parent)
    return final


# ----------------------------------------------------------------------------- checkpoints

COMPLETE = "COMPLETE"


def rng_state() -> dict:
    """Every RNG a training step draws from (torch, CUDA, Python, NumPy), for a checkpoint."""
    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def complete_checkpoints(out_dir) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.name.startswith("step-") and (p / COMPLETE).is_file())


def newest_verified_checkpoint(out_dir, *, report=None) -> Path | None:
    """The newest complete checkpoint whose files match their manifest. A damaged one is
    reported through ``report(message)`` (naming the file and the checkpoint used instead)
    and skipped; a checkpoint of an older nudgelib (no manifest) is used as it is."""
    return newest_intact(complete_checkpoints(out_dir), checkpoint_problem, report=report)


def newest_intact(found: Sequence[Path], problem_of, *, report=None) -> Path | None:
    """The newest of ``found`` (oldest first) for which ``problem_of(checkpoint)`` finds
    nothing wrong; each newer one that is damaged is skipped and reported through
    ``report(message)``, naming what is wrong and the checkpoint used instead. None when
    none is intact (all of them reported)."""
    damaged = []
    for ckpt in reversed(found):
        problem = problem_of(ckpt)
        if problem is None:
            if damaged and report is not None:
                report(f"checkpoint {damaged[-1][0].name} is damaged: {damaged[-1][1]}; "
                       f"resuming from {ckpt.name} instead")
            return ckpt
        damaged.append((ckpt, problem))
    if damaged and report is not None:
        report("; ".join(f"checkpoint {c.name} is damaged: {p}" for c, p in damaged)
               + "; no intact checkpoint is left")
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """What is wrong with a complete checkpoint's files (a file missing, cut short or changed
    against its manifest), or None when they match; a checkpoint of an older nudgelib (no
    manifest, its files all there) counts as intact."""
    ckpt = Path(ckpt)
    problem = verify_folder(ckpt)
    if problem is not None and not (ckpt / MANIFEST).exists() and _older_layout(ckpt):
        return None
    return problem


def _older_layout(ckpt: Path) -> bool:
    """A checkpoint written before manifests existed: its files are all there."""
    return (ckpt / "trainer_state.pt").is_file() and (ckpt / "policy").is_dir()


def retire_checkpoint(ckpt: Path) -> None:
    """Delete a checkpoint so that no kill can leave it looking complete: its completeness
    marker goes first."""
    (Path(ckpt) / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(ckpt, ignore_errors=True)


def clean_partial_checkpoints(out_dir) -> None:
    """Remove what a kill left behind under ``checkpoints/``: temporary, retired and
    incomplete ``step-*`` folders (only nudgelib's own names)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return
    for p in root.iterdir():
        own = p.name.startswith(("step-", ".tmp-step-", ".old-step-"))
        if own and p.is_dir() and not (p / COMPLETE).is_file():
            shutil.rmtree(p, ignore_errors=True)


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """Refuse to start when ``folder``'s device has less than ``need_bytes`` free (a run that
    would fail at its first checkpoint, minutes in)."""
    free = shutil.disk_usage(Path(folder)).free
    if free < need_bytes:
        raise RunFolderError(f"not enough space for {what} in {folder}: about "
                             f"{need_bytes / 2**20:.1f} MB needed, {free / 2**20:.1f} MB free")


def save_error(err: Exception, where: Path, what: str) -> RunFolderError:
    """What a failed save says: "no space left" when the device is full (``torch.save`` then
    raises ``RuntimeError: ... unexpected pos``, not ENOSPC), permission, else the error."""
    import errno

    reason = _os_reason(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or (
            free is not None and free < 2**20):
        reason = f"no space left on the device ({free if free is not None else '?'} bytes free)"
    return RunFolderError(f"cannot save {what} in {where}: {reason}")
