"""The math-verify server: a subprocess that checks answers in forked children with deadlines.

Started by :mod:`nudgelib.tasks.verify` as ``python -m nudgelib.tasks._verify_server``. It imports
math-verify once, then for each request line on stdin (JSON ``[id, gold, pred, seconds]``) forks
a child that runs the check, and writes ``[id, outcome]`` to stdout.

Deadlines are CPU time, measured in the child: ``ITIMER_PROF`` ends a child that has computed
for its ``seconds`` (answered ``timeout``), however many other checks share the machine, so load
cannot turn a correct answer into a timeout. At most :data:`MAX_CHILDREN` (the CPU count) run
at once; later requests wait in a queue, and their clock starts when their child does. A child
that still runs :data:`WALL_FACTOR` times its deadline later (stuck without computing) is killed
(SIGKILL), also ``timeout``; one that dies otherwise is answered ``error``.
The server is single-threaded, so forking it is safe, and a fork costs milliseconds because
math-verify and sympy are already imported. Children get an address-space limit, so a hostile
input cannot take the machine's memory.

Protocol lines are JSON; the first line the server writes is ``"ready"``.
"""

from __future__ import annotations

import collections
import json
import math
import os
import select
import signal
import sys
import time

from nudgelib.tasks.verify import MAX_CHILDREN, WALL_FACTOR, math_verify_check

MEMORY_LIMIT_BYTES = 2 * 2**30
TIMEOUT_SIGNALS = (signal.SIGPROF, signal.SIGXCPU, signal.SIGKILL)
_WARMUP = [
    ("\\frac{14}{3}", "\\dfrac{14}{3}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("x^2+7x+10", "(x+2)(x+5)"),
    ("\\text{Evelyn}", "Evelyn"),
    ("[-2, 7]", "\\{1, 2\\}"),
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("0.5", "50\\%"),
]


def _child(gold: str, pred: str, seconds: float, wfd: int) -> None:  # pragma: no cover
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed child writes no core file
    except (ImportError, ValueError, OSError):
        pass
    # the deadline: `seconds` of this child's own CPU time (SIGPROF's default action ends it,
    # even inside a C call that holds the GIL)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        out = math_verify_check(gold, pred, max(1, math.ceil(seconds)))
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

    # Warm the parser caches (ANTLR's DFA, sympy's) here, once: every forked child inherits
    # them. A cold child spends ~0.1 s rebuilding them on its first parse.
    for gold, pred in _WARMUP:
        math_verify_check(gold, pred, 5)

    def reply(obj) -> None:
        out.write((json.dumps(obj) + "\n").encode())
        out.flush()

    reply("ready")
    in_fd = inp.fileno()
    running: dict[int, tuple] = {}  # read fd -> (req_id, pid, wall deadline, chunks)
    queue: collections.deque = collections.deque()  # requests waiting for a free slot
    buf = b""
    eof = False

    def start(req_id, gold, pred, seconds: float) -> None:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(rfd)
            _child(gold, pred, seconds, wfd)
        os.close(wfd)
        running[rfd] = (req_id, pid, time.monotonic() + WALL_FACTOR * seconds + 0.5, [])

    def outcome(pid: int, chunks: list) -> str:
        _, status = os.waitpid(pid, 0)
        text = b"".join(chunks).decode()
        if text:
            return text  # an answer written just before the deadline keeps its verdict
        return "timeout" if os.WIFSIGNALED(status) and os.WTERMSIG(status) in TIMEOUT_SIGNALS \
            else "error"

    while not eof or running or queue:
        while queue and len(running) < MAX_CHILDREN:
            start(*queue.popleft())
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
                        seconds = max(0.01, float(seconds))
                    except (ValueError, TypeError):
                        continue
                    if len(running) < MAX_CHILDREN:
                        start(req_id, gold, pred, seconds)
                    else:
                        queue.append((req_id, gold, pred, seconds))
            else:
                chunk = os.read(fd, 4096)
                if chunk:
                    running[fd][3].append(chunk)
                    continue
                req_id, pid, _, chunks = running.pop(fd)
                os.close(fd)
                reply([req_id, outcome(pid, chunks)])
        now = time.monotonic()
        for fd, (req_id, pid, deadline, chunks) in list(running.items()):
            if now >= deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(fd)
                del running[fd]
                reply([req_id, outcome(pid, chunks)])


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    serve()
