"""Answer extraction and verification: the reward signal of RLVR.

Model completions are untrusted text. Nothing here evaluates them as code, nothing raises on
them, and every call returns within its deadline:

* :func:`extract_answer` pulls the final answer out of a completion in linear time;
* :func:`verify` decides whether it equals the gold answer: a fast exact path for plain
  numbers (integers, decimals, fractions; it only decides where math-verify would agree),
  otherwise math-verify (``verify(gold, prediction)``, gold first: it is not symmetric);
* math-verify runs in forked child processes of a small server subprocess
  (:mod:`nudgelib.tasks._verify_server`), killed at the deadline. math-verify's own timeout uses
  SIGALRM, which only works in the main thread, and a thread cannot stop sympy: a big-integer
  power such as ``9**9**9`` holds the GIL until it finishes. A process can be killed.

Reasons reported in :class:`VerifyResult`: ``correct``, ``mismatch``, ``no_answer`` (nothing
extracted), ``parse_error`` (math-verify could not read the prediction, or it is absurdly long),
``timeout`` (the deadline passed), ``error`` (the worker died, e.g. out of memory).
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

__all__ = [
    "VerifyResult",
    "completion_text",
    "extract_answer",
    "verify",
    "verify_batch",
    "warmup",
    "EXTRACTORS",
]

MAX_TEXT_CHARS = 100_000
"""Only the last this-many characters of a completion are searched for its answer."""
MAX_ANSWER_CHARS = 1_000
"""An extracted answer longer than this is not an answer (reason ``parse_error``)."""


@dataclass(frozen=True)
class VerifyResult:
    """Verdict on one completion. ``path`` says which check decided: fast, math_verify, string."""

    correct: bool
    extracted: str | None
    reason: str
    path: str = ""
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return self.correct


# --------------------------------------------------------------------------- text handling

_SURROGATES = re.compile("[\ud800-\udfff]")


def completion_text(completion) -> str:
    """Plain text of a completion given as a string, a chat message, or a list of messages.

    A list of messages (TRL's conversational format) yields the content of the last assistant
    message (or of the last message). Anything else becomes ``""`` rather than an exception.
    """
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, bytes):
        text = completion.decode("utf-8", "replace")
    elif isinstance(completion, dict):
        text = completion.get("content", "")
        if isinstance(text, list):  # multimodal content parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    elif isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, dict)]
        pick = [m for m in msgs if m.get("role") == "assistant"] or msgs
        text = completion_text(pick[-1]) if pick else ""
    else:
        text = ""
    if not isinstance(text, str):
        text = ""
    # NUL bytes and lone surrogates cannot be encoded or sent to a worker: drop them.
    return _SURROGATES.sub("", text.replace("\x00", ""))


# --------------------------------------------------------------------------- extraction

BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)|\\boxed\s+([^\s$\\{}]+)")
"""A ``\\boxed{`` / ``\\fbox{`` (group 1: its opening brace; see :func:`matching_braces`) or a
brace-less ``\\boxed 42`` (group 2: the answer)."""
_BRACE = re.compile(r"\\\\|\\[{}]|[{}]")
# Both patterns are unambiguous (no two adjacent quantifiers can share a character), so a
# failed match backtracks linearly: "(?:\*\*)?\s*" after "\s*" once made a long run of spaces
# quadratic, and a lazy answer followed by "[ \t]*$" did the same to "#### 1" and spaces.
_GSM8K = re.compile(r"####[ \t]*([^\s#][^\n]*)")  # trailing blanks: stripped by the caller
_PHRASE = re.compile(
    r"\banswer\s*(?:\*\*\s*)?(?:is\b|:|=)\s*(?:\*\*\s*)?([^\n]{1,200})",
    re.I,
)


def matching_braces(text: str) -> dict[int, int]:
    """Map each unescaped ``{`` to its matching ``}`` in one linear pass (``\\{``, ``\\}`` skipped)."""
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _BRACE.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            match[stack.pop()] = m.start()
    return match


def _extract_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``)."""
    hits = list(BOXED_RE.finditer(text))
    if not hits:
        return None
    match = matching_braces(text) if any(h.group(1) for h in hits) else {}
    for h in reversed(hits):
        if h.group(2) is not None:
            return h.group(2)
        close = match.get(h.start(1))
        if close is not None:
            return text[h.start(1) + 1 : close].strip()
    return None


def _last_match(regex: re.Pattern, text: str) -> re.Match | None:
    last = None
    for m in regex.finditer(text):
        last = m
    return last


def _extract_gsm8k(text: str) -> str | None:
    last = _last_match(_GSM8K, text)
    return last.group(1).strip() if last else None


def _extract_phrase(text: str) -> str | None:
    last = _last_match(_PHRASE, text)
    if last is None:
        return None
    ans = last.group(1).strip()
    if "\\boxed" in ans or "\\fbox" in ans or ans.count("{") != ans.count("}"):
        return None  # an unclosed box or brace: a truncated output states no answer
    # Peel wrappers and a sentence-final period ("$\\frac{1}{2}$." -> "\\frac{1}{2}");
    # a decimal point stays ("3.5." -> "3.5").
    prev = None
    while ans != prev:
        prev = ans
        ans = ans.strip().strip("*").strip()
        ans = re.sub(r"^\$+|\$+$", "", ans)
        ans = ans[:-1] if ans.endswith(".") else ans
    return ans or None


def _extract_short(text: str) -> str | None:
    """Short answers ("Answer with the final number only."): the last plain number on the first
    non-empty line, so ``12``, ``12.``, ``7 + 5 = 12`` and ``The sum is 12`` all give ``12``, and
    nothing after the first line counts (a model cannot list candidates over several lines).
    Only for questions where echoing the question cannot end in the answer (see
    :mod:`nudgelib.tasks.arithmetic`)."""
    last = _last_match(NUMBER_RE, text.lstrip().split("\n", 1)[0])
    return last.group().replace(",", "") if last else None


EXTRACTORS = {"boxed": _extract_boxed, "gsm8k": _extract_gsm8k, "phrase": _extract_phrase,
              "short": _extract_short}
"""Extraction strategies, tried in the order given to :func:`extract_answer`. The default order
is :data:`DEFAULT_STRATEGIES`; ``short`` is opt-in (short-answer tasks)."""
DEFAULT_STRATEGIES = ("boxed", "gsm8k", "phrase")


def extract_answer(text, *, strategies: Sequence[str] = DEFAULT_STRATEGIES) -> str | None:
    """The final answer of a completion, or None.

    Convention: the LAST well-formed ``\\boxed{...}`` (nested braces handled, ``\\{``/``\\}``
    are literal); else the last ``#### <answer>`` line (GSM8K); else the last phrase such as
    "the answer is ...", "final answer: ...". ``strategies`` picks and orders these (names in
    :data:`EXTRACTORS`; ``short``, the last number of the first line, is for short-answer
    tasks). Only the last :data:`MAX_TEXT_CHARS` characters are searched; all
    strategies run in linear time.
    """
    text = completion_text(text)[-MAX_TEXT_CHARS:]
    for name in strategies:
        try:
            fn = EXTRACTORS[name]
        except KeyError:
            raise ValueError(f"unknown extraction strategy {name!r}; expected some of "
                             f"{sorted(EXTRACTORS)}") from None
        ans = fn(text)
        if ans:
            return ans
    return None


# --------------------------------------------------------------------------- fast exact path

_NUM = r"[-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|[-+]?\.[0-9]+"
NUMBER_RE = re.compile(rf"(?:{_NUM})")
"""A plain number: optional sign, digits with optional thousands commas, optional decimals.
ASCII digits only (``\\d`` would take ``٣`` or ``３`` too, which math-verify does not read as
numbers): anything else is left to math-verify, so both paths decide alike."""
_FRAC_RE = re.compile(rf"([-+]?)\\[dt]?frac\{{({_NUM})\}}\{{({_NUM})\}}")
_SLASH_RE = re.compile(rf"({_NUM})/({_NUM})")
_STRIP = re.compile(r"\\[!,;: ]|\\\$|\$|\\left|\\right|\s+")


def as_number(s: str) -> tuple[Fraction, bool] | None:
    """Parse a plain number; returns (value, is_integer_literal) or None if not plain."""
    s = _STRIP.sub("", s)
    s = s.rstrip(".") if not s.endswith("..") else s
    if not s or len(s) > 40:
        return None
    try:
        if NUMBER_RE.fullmatch(s):
            lit = s.replace(",", "")
            return Fraction(lit), ("." not in lit)
        m = _FRAC_RE.fullmatch(s) or _SLASH_RE.fullmatch(s)
        if m:
            sign, a, b = m.groups() if m.re is _FRAC_RE else ("", *m.groups())
            num, den = Fraction(a.replace(",", "")), Fraction(b.replace(",", ""))
            if den == 0:
                return None
            val = num / den
            return (-val if sign == "-" else val), False
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _fast_compare(gold: str, pred: str) -> bool | None:
    """Exact verdict for plain numbers where math-verify is sure to agree, else None.

    Equal rationals are correct. Two integer literals of at most 15 digits that differ are a
    mismatch (math-verify compares with 15-digit precision). Unequal decimals or fractions are
    left to math-verify, which rounds (it accepts 0.333333 for 1/3).
    """
    g, p = as_number(gold), as_number(pred)
    if g is None or p is None:
        return None
    if g[0] == p[0]:
        return True
    if g[1] and p[1] and max(abs(g[0]), abs(p[0])) < 10**15:
        return False
    return None


_NORM = re.compile(r"\\left|\\right|\\[!,;: ]|\\text\{|\\mathrm\{|[\s{}$]")


def normalise_answer(s: str) -> str:
    """An answer with LaTeX sizing, spacing, ``\\text{``, braces, ``$`` and spaces removed,
    lower-cased: the form in which two answers are compared as strings."""
    return _NORM.sub("", s).lower()


def _string_equal(gold: str, pred: str) -> bool:
    return normalise_answer(gold) == normalise_answer(pred)


# --------------------------------------------------------------------------- math-verify worker


def math_verify_check(gold: str, pred: str, seconds: int) -> str:
    """Run math-verify on (gold, pred); returns correct | mismatch | parse_error | gold_unparsed."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    in_main = threading.current_thread() is threading.main_thread()
    tmo = seconds if in_main else None  # SIGALRM works only in the main thread
    g = parse("\\boxed{" + gold + "}", parsing_timeout=tmo)
    if not g:
        return "gold_unparsed"
    p = parse("\\boxed{" + pred + "}", parsing_timeout=tmo)
    if not p:
        return "parse_error"
    return "correct" if mv_verify(g, p, timeout_seconds=tmo) else "mismatch"


SERVER_START_TIMEOUT = 120.0
"""Seconds to wait for the math-verify server to start (a one-time import of sympy)."""
MAX_CHILDREN = max(1, os.cpu_count() or 1)
"""Checks the math-verify server runs at once (one per CPU); later ones queue."""
WALL_FACTOR = 4.0
"""A check still running this many times its (CPU-time) deadline later is killed: stuck."""
_REPLY_MARGIN = 0.25
"""Seconds allowed beyond the deadline for the server to kill a child and answer."""


class _Server:
    """Client of :mod:`nudgelib.tasks._verify_server`, a subprocess that forks one child per check.

    A dedicated subprocess (not :mod:`multiprocessing`) so that nothing re-imports the user's
    ``__main__``: unguarded scripts, ``python -c`` and notebooks all work. One reader thread
    routes replies to the waiting callers, so any number of threads can check at once.
    """

    def __init__(self) -> None:
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nudgelib.tasks._verify_server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.ready = threading.Event()
        self.write_lock = threading.Lock()
        self.pending: dict[int, list] = {}
        self.ids = itertools.count()
        threading.Thread(target=self._read, daemon=True, name="nudgelib-verify-reader").start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg == "ready":
                self.ready.set()
                continue
            slot = self.pending.pop(msg[0], None)
            if slot is not None:
                slot[1] = msg[1]
                slot[0].set()
        for slot in list(self.pending.values()):  # the server died: release every waiter
            slot[1] = "error"
            slot[0].set()
        self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self, gold: str, pred: str, timeout: float) -> str:
        # Start-up (first use only) is not charged to the caller's deadline: a slow start
        # must not turn a correct answer into a timeout. warmup() starts it ahead of time.
        if not self.ready.wait(SERVER_START_TIMEOUT) or not self.alive():
            return "error"
        req = next(self.ids)
        slot: list = [threading.Event(), None]
        self.pending[req] = slot
        line = json.dumps([req, gold, pred, timeout]) + "\n"
        try:
            with self.write_lock:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
        except (OSError, ValueError):
            self.pending.pop(req, None)
            return "error"
        # The server's deadline is CPU time in the check's own process, and at most one check
        # per CPU runs at once (the rest queue): wait for the checks ahead of this one, and
        # for a child that is stuck without computing (killed at WALL_FACTOR x the deadline).
        rounds = 1 + (len(self.pending) - 1) // MAX_CHILDREN
        if slot[0].wait(rounds * (WALL_FACTOR * timeout + 0.5) + _REPLY_MARGIN):
            return slot[1]
        self.pending.pop(req, None)
        return "timeout"

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(2)
        except Exception:
            self.proc.kill()


_SERVER: _Server | None = None
_SERVER_LOCK = threading.Lock()


@atexit.register
def _close_server() -> None:
    if _SERVER is not None:
        _SERVER.close()


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _server() -> _Server | None:
    """The shared math-verify server (restarted if it died); None where fork is unavailable."""
    global _SERVER
    if not hasattr(os, "fork"):
        return None
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = _Server()
        return _SERVER


def warmup() -> None:
    """Start the math-verify server now (a one-time 1-3 s) instead of at the first check."""
    server = _server()
    if server is not None:
        server.ready.wait(SERVER_START_TIMEOUT)


def _inprocess_check(gold: str, pred: str, timeout: float) -> str:
    """Fallback without fork (Windows): a daemon thread, abandoned at the deadline.

    This bounds the caller's wait for ordinary slow parses, but cannot stop computations that
    hold the GIL (huge integer powers); POSIX systems use the killable server instead.
    """
    box: list[str] = []

    def run():
        try:
            box.append(math_verify_check(gold, pred, max(1, math.ceil(timeout))))
        except BaseException:
            box.append("error")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else "timeout"


# --------------------------------------------------------------------------- public API


def _prepare(gold, completion, t0: float, strategies: Sequence[str] = DEFAULT_STRATEGIES):
    """Extraction and the fast path. Returns (VerifyResult | None, gold_str, extracted)."""
    gold_s = completion_text(gold) if not isinstance(gold, (int, float, Fraction)) else str(gold)
    gold_s = gold_s.strip()
    pred = extract_answer(completion, strategies=strategies)
    if pred is None:
        return VerifyResult(False, None, "no_answer", "extract", time.perf_counter() - t0), gold_s, None
    if len(pred) > MAX_ANSWER_CHARS:
        return (VerifyResult(False, pred[:80] + "...", "parse_error", "extract",
                             time.perf_counter() - t0), gold_s, pred)
    fast = _fast_compare(gold_s, pred)
    if fast is not None:
        reason = "correct" if fast else "mismatch"
        return VerifyResult(fast, pred, reason, "fast", time.perf_counter() - t0), gold_s, pred
    return None, gold_s, pred


def _finish(gold_s: str, pred: str, outcome: str, t0: float) -> VerifyResult:
    path = "math_verify"
    if outcome == "gold_unparsed":  # math-verify cannot read the gold: compare as strings
        ok = _string_equal(gold_s, pred)
        outcome, path = ("correct" if ok else "mismatch"), "string"
    return VerifyResult(outcome == "correct", pred, outcome, path, time.perf_counter() - t0)


def _slow_check(gold_s: str, pred: str, timeout: float) -> str:
    server = _server()
    if server is None:
        return _inprocess_check(gold_s, pred, timeout)
    return server.check(gold_s, pred, timeout)


def _check_timeout(timeout) -> float:
    if not isinstance(timeout, (int, float)) or not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def verify(gold, completion, *, timeout: float = 2.0,
           strategies: Sequence[str] = DEFAULT_STRATEGIES) -> VerifyResult:
    """Is the final answer of ``completion`` equal to ``gold``? Never raises on model output.

    ``gold`` is the answer as datasets store it (``\\frac{3}{56}``, ``18``, ``\\text{Evelyn}``,
    a tuple...). ``completion`` is a string or chat messages; ``strategies`` is how its answer
    is found (:func:`extract_answer`). The check may use ``timeout`` seconds of CPU time in its
    own process (POSIX), so a machine busy with other checks cannot turn a correct answer into a
    timeout; on an idle machine it returns within about ``timeout`` seconds (+ 0.25 s), from
    any thread, once the math-verify server has started (see :func:`warmup`; its one-time
    start is not charged to the deadline). A check that stops computing (stuck) is killed at
    four times the deadline.
    """
    timeout = _check_timeout(timeout)
    t0 = time.perf_counter()
    done, gold_s, pred = _prepare(gold, completion, t0, strategies)
    if done is not None:
        return done
    left = timeout - (time.perf_counter() - t0)
    if left <= 0:
        return VerifyResult(False, pred, "timeout", "extract", time.perf_counter() - t0)
    return _finish(gold_s, pred, _slow_check(gold_s, pred, left), t0)


def verify_batch(golds: Sequence, completions: Sequence, *, timeout: float = 2.0,
                 workers: int | None = None,
                 strategies: Sequence[str] = DEFAULT_STRATEGIES) -> list[VerifyResult]:
    """:func:`verify` over many pairs: fast path inline, the rest ``workers`` at a time.

    Each item gets the same deadline: ``timeout`` seconds of CPU time of its own check (on
    POSIX; measured in the worker, so other checks running at the same time cannot use it
    up), with at most one check per CPU at once. ``workers`` defaults to min(4, CPU count).
    """
    timeout = _check_timeout(timeout)
    if len(golds) != len(completions):
        raise ValueError(f"golds and completions must have the same length, got "
                         f"{len(golds)} and {len(completions)}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    n_workers = workers or _default_workers()
    results: list[VerifyResult | None] = [None] * len(golds)
    slow: list[tuple[int, str, str]] = []
    for i, (g, c) in enumerate(zip(golds, completions)):
        done, gold_s, pred = _prepare(g, c, time.perf_counter(), strategies)
        if done is not None:
            results[i] = done
        else:
            slow.append((i, gold_s, pred))
    if slow:
        def run(item):
            i, gold_s, pred = item
            t0 = time.perf_counter()
            results[i] = _finish(gold_s, pred, _slow_check(gold_s, pred, timeout), t0)

        if n_workers == 1 or len(slow) == 1:
            for item in slow:
                run(item)
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as ex:
                list(ex.map(run, slow))
    return results  # type: ignore[return-value]
