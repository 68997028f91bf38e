"""The stale-lock race of ``test_faults.py``, run in a small process of its own.

    python -m tests.training.lock_race FOLDER ROUNDS    # prints {"rounds": R, "doubles": [...]}

Each round: a lock record of a process that is gone (a stale lock, as a kill leaves it), then
six processes forked from this one start at the same moment (a barrier) and try to take the
lock. Exactly one must hold it, and it must say it replaced the stale one. Forking from the
test runner itself, late in a full test session, copies gigabytes of page tables per fork (66 s
for 100 rounds in CI, 9 s alone); forked from here, the same rounds cost seconds.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nudgelib.training.runs import LOCK, RunFolderError, RunLock

CONTENDERS = 6


def _contender(folder, barrier, results):
    try:
        barrier.wait()
        lock = RunLock(folder).acquire()
        results.put(("held", os.getpid(), bool(lock.replaced)))
        time.sleep(30)  # hold it until the round ends (killed)
    except RunFolderError:
        results.put(("refused", os.getpid(), False))


def race(root: Path, rounds: int) -> list:
    """The rounds in which not exactly one process held the lock (or it did not report the
    stale lock it replaced), with what each process said."""
    ctx = mp.get_context("fork")
    doubles = []
    for r in range(rounds):
        folder = root / f"r{r}"
        folder.mkdir()
        dead = subprocess.Popen(["true"])
        dead.wait()
        (folder / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                               "since": "earlier", "token": "old"}))
        barrier, results = ctx.Barrier(CONTENDERS), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(folder, barrier, results))
                 for _ in range(CONTENDERS)]
        for p in procs:
            p.start()
        got = [results.get(timeout=30) for _ in procs]
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        held = [g for g in got if g[0] == "held"]
        if len(held) != 1 or not held[0][2]:
            doubles.append((r, got))
    return doubles


if __name__ == "__main__":
    root, rounds = Path(sys.argv[1]), int(sys.argv[2])
    print(json.dumps({"rounds": rounds, "doubles": race(root, rounds)}))
