"""The math-verify server: a subprocess that checks answers in forked children with deadlines.

Started by :mod:`nudgelib.verify` as ``python -m nudgelib._verify_server``. It imports
math-verify once, then for each request line on stdin (JSON ``[id, gold, pred, seconds]``) forks
a child that runs the check, and writes ``[id, outcome]`` to stdout. A child still running at its
deadline is killed (SIGKILL) and answered ``timeout``; one that dies is answered ``error``.
The server is single-threaded, so forking it is safe, and a fork costs milliseconds because
math-verify and sympy are already imported. Children get an address-space limit, so a hostile
input cannot take the machine's memory.

Protocol lines are JSON; the first line the server writes is ``"ready"``.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import time

MEMORY_LIMIT_BYTES = 2 * 2**30
_WARMUP = [
    ("\\frac{14}{3}", "\\dfrac{14}{3}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("x^2+7x+10", "(x+2)(x+5)"),
    ("\\text{Evelyn}", "Evelyn"),
    ("[-2, 7]", "\\{1, 2\\}"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("0.5", "50\\%"),
]


def _child(gold: str, pred: str, seconds: int, wfd: int) -> None:  # pragma: no cover - child
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    try:
        from nudgelib.verify import math_verify_check

        out = math_verify_check(gold, pred, seconds)
    except BaseException as err:  # math-verify's timeout exception derives from BaseException
        out = "timeout" if "timeout" in type(err).__name__.lower() else "error"
    try:
        os.write(wfd, out.encode())
    finally:
        os._exit(0)


def serve(inp=None, out=None) -> None:
    inp = inp or sys.stdin.buffer
    out = out or sys.stdout.buffer
    import math_verify  # noqa: F401  (warm import, shared with every forked child)

    from nudgelib.verify import math_verify_check

    # Warm the parser caches (ANTLR's DFA, sympy's) here, once: every forked child inherits
    # them. A cold child spends ~0.1 s rebuilding them on its first parse.
    for gold, pred in _WARMUP:
        math_verify_check(gold, pred, 5)

    def reply(obj) -> None:
        out.write((json.dumps(obj) + "\n").encode())
        out.flush()

    reply("ready")
    in_fd = inp.fileno()
    running: dict[int, tuple] = {}  # read fd -> (req_id, pid, deadline, chunks)
    buf = b""
    eof = False
    while not eof or running:
        now = time.monotonic()
        wait = min((r[2] for r in running.values()), default=now + 3600) - now
        fds = list(running) + ([] if eof else [in_fd])
        ready, _, _ = select.select(fds, [], [], max(0.0, wait))
        for fd in ready:
            if fd == in_fd:
                data = os.read(in_fd, 1 << 16)
                if not data:
                    eof = True
                    continue
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        req_id, gold, pred, seconds = json.loads(line)
                    except (ValueError, TypeError):
                        continue
                    rfd, wfd = os.pipe()
                    pid = os.fork()
                    if pid == 0:  # pragma: no cover - child
                        os.close(rfd)
                        _child(gold, pred, max(1, math.ceil(float(seconds))), wfd)
                    os.close(wfd)
                    running[rfd] = (req_id, pid, time.monotonic() + float(seconds), [])
            else:
                chunk = os.read(fd, 4096)
                if chunk:
                    running[fd][3].append(chunk)
                    continue
                req_id, pid, _, chunks = running.pop(fd)
                os.close(fd)
                os.waitpid(pid, 0)
                result = b"".join(chunks).decode() or "error"
                reply([req_id, result])
        now = time.monotonic()
        for fd, (req_id, pid, deadline, chunks) in list(running.items()):
            if now >= deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                os.close(fd)
                del running[fd]
                # a child that answered just before its deadline keeps its answer
                reply([req_id, b"".join(chunks).decode() or "timeout"])


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    serve()
