"""Hints for nudging: prompt templates, self-generated and teacher hints, the leakage check, and
the hint bank.

NuRL (arXiv 2509.25666, docs/method.md §2.1) collects one hint per training problem, offline, before
RL, with two calls to the model being trained:

1. *explanation* — shown the question AND the gold answer, the model explains why the answer is
   right (:data:`EXPLANATION_TEMPLATE`);
2. *hint* — shown question, answer and its explanation, it writes a short hint of the type asked
   (:data:`HINT_TEMPLATES`): ``abstract`` (the key idea, no answer, no steps — NuRL's default),
   ``partial_steps`` (the first steps only); ``explanation`` is the first call's text itself and
   ``answer`` states the gold answer (no model call). docs/method.md §2.5 ranks them
   abstract > partial_steps > explanation > answer.

    bank = generate_hints(policy, problems, hint_type="abstract")     # self-generated
    bank = generate_hints(teacher, problems, source="teacher")        # any other policy
    bank = handwritten_hints({"gsm8k/train/3": "Work out one hour first."}, problems)
    bank = reference_hints(problems, "partial_steps")   # from the dataset's written solution
    bank.leak_rate(), bank.lookup("gsm8k/train/3", "abstract")
    bank.dataset.save_to_disk("hints/")          # a plain datasets.Dataset ...
    bank = HintBank(datasets.load_from_disk("hints/"))   # ... loaded back the standard way

Every hint is checked by :func:`hint_leaks_answer` — the gold answer, found as a number of
equal value, as a normalised string, or verified equal by math-verify on a math span of the
hint (bounded time) — and a leaking hint is regenerated, dropped or kept-and-flagged by
``on_leak``. The paper enforces "no answer" only through its prompt; the check is nudgelib's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from nudgelib.problems import Problem

HINT_TYPES = ("abstract", "partial_steps", "explanation", "answer")
"""Hint types, best to worst in the paper's comparison (docs/method.md §2.5)."""

COLUMNS = ("problem_id", "hint_type", "hint", "source", "leak", "attempts", "seconds")
"""Columns of a hint bank's dataset: problem id, type, text, where it came from ("self",
"teacher:<name>", "hand", "reference", "toy"), whether it leaks the gold answer, how many
generations it took, and the generation time charged to it."""

EXPLANATION_TEMPLATE = (
    "Question: {question}\n\n"
    "The correct final answer is: {answer}\n\n"
    "Explain step by step why this answer is correct.")
"""First call: the model explains the gold answer (NuRL's wording is not published; OPEN)."""

HINT_TEMPLATES: dict[str, str | None] = {
    "abstract": (
        "Question: {question}\n\n"
        "Correct answer: {answer}\n\n"
        "Explanation: {explanation}\n\n"
        "Write one short hint, one or two sentences, for a student who is stuck on this "
        "question. Name only the key idea, formula or first direction they need. Do not state "
        "the final answer and do not give any calculations."),
    "partial_steps": (
        "Question: {question}\n\n"
        "Correct answer: {answer}\n\n"
        "Explanation: {explanation}\n\n"
        "Write only the first one or two steps of the solution, so that a student can finish "
        "it alone. Stop before the end and do not state the final answer."),
    "explanation": None,  # the first call's explanation is the hint
    "answer": "The answer is {answer}.",  # no model call
    "strategy": (
        "Question: {question}\n\n"
        "Do not solve the question. In at most six words, name the strategy, method or "
        "concept a student could use to solve it (for example: 'work backwards', 'count "
        "per hour', 'add the parts first')."),  # one call, the question alone
}
HINT_TEMPLATES["strategy_2"] = HINT_TEMPLATES["strategy"]  # NudgeRL's second context
"""Second call per hint type (``None``: the explanation itself; ``{explanation}``: two calls;
``{question}`` without ``{explanation}``: one call that sees the question alone and never the
answer, NudgeRL's strategy contexts; neither: a fixed text). Pass your own dict to
:func:`generate_hints` to change the wording."""

CONTEXT_TYPES = ("strategy", "strategy_2")
"""Answer-free hint types, written from the problem alone (NudgeRL's two strategy contexts per
problem, docs/method.md §3): never shown the gold answer or a solution. The second is a second
sample of the same prompt."""

ON_LEAK = ("regenerate", "drop", "keep")
LEAKS_BY_DESIGN = frozenset({"answer"})
"""Hint types that state the answer on purpose: flagged like any other, but never dropped and
always served."""
MAX_HINT_CHARS = 600


def model_calls(template: str | None) -> int:
    """Model calls a hint of this template costs: 2 (explanation, then hint), 1 (the
    explanation is the hint: ``None``; or a prompt on the question alone) or 0 (a fixed text
    such as the answer)."""
    if template is None:
        return 1
    if "{explanation}" in template:
        return 2
    return 1 if "{question}" in template else 0


def _question_only(template: str | None) -> bool:
    """A template that is a model prompt on the question alone (no explanation call)."""
    return template is not None and "{explanation}" not in template and "{question}" in template


class HintBankError(ValueError):
    """A hint bank's table is malformed; the message names the column or row."""


# ----------------------------------------------------------------------------- leakage

_FRACTION = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}|\\[dt]?frac(\d)(\d)|"
                       r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])")
_MATH_SPAN = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|\$([^$]+)\$|\\\((.+?)\\\)")
# thousands written with a space, a thin space, LaTeX's \, or {,} or an apostrophe: 1 000
_THOUSANDS_SEP = re.compile(r"(?<=\d)(?:\\,|\{,\}|[ \u00a0\u2009\u202f'])(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"\s*(?:\\?%|percent\b|per cent\b)", re.I)
# a power a^b / a^{b} / a**b, or a root \sqrt{a}, \sqrt a, sqrt(a), √a
_POWER = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^|\*\*)\s*(?:\{\s*(-?\d+(?:/\d+)?)\s*\}|\(\s*(-?\d+(?:/\d+)?)"
                    r"\s*\)|(-?\d+))")
_ROOT = re.compile(r"(?:\\sqrt\s*(?:\{\s*(\d+(?:\.\d+)?)\s*\}|(\d+(?:\.\d+)?))|sqrt\s*\(\s*(\d+"
                   r"(?:\.\d+)?)\s*\)|√\s*(\d+(?:\.\d+)?))")
# step and list markers are incidental: "Step 2", "(2)", a line starting "2." or "2)"
_ENUMERATOR = re.compile(r"\b(?:step|part|case|stage)\s+(\d+)\b|\((\d+)\)|^\s*(\d+)[.)](?!\d)",
                         re.I | re.M)

# a lone small number word ("two", "six") counts only after a cue that states a result
_RESULT_CUE = re.compile(r"(?:answer|result|equals?|total|=|\bis|are|gives?|gets?|makes?|comes? to)"
                         r"\W*(?:\w+\W+)?$", re.I)
_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_DENOMS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4,
           "fourth": 4, "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6,
           "eighth": 8, "eighths": 8, "tenth": 10, "tenths": 10}
_WORD = re.compile(r"[a-z]+", re.I)


def _number(s: str) -> Fraction | None:
    from nudgelib.verify import as_number

    s = re.sub(r"\\[dt]?frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac34 = \frac{3}{4}
    s = _THOUSANDS_SEP.sub("", s)
    pct = _PERCENT.search(s)
    if pct and pct.end() == len(s):
        got = as_number(s[:pct.start()])
        return got[0] / 100 if got is not None else None
    got = as_number(s)
    return got[0] if got is not None else None


def _word_numbers(text: str) -> Iterable[tuple[int, int, Fraction]]:
    """(start, end, value) of each run of number words: "eighteen", "one hundred twenty-three",
    "two thousand and five", "three quarters" (3/4), "one and a half" (3/2)."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    i = 0
    while i < len(words):
        start, total, current, j, seen = words[i][0], 0, 0, i, False
        end = words[i][1]
        while j < len(words):
            w = words[j][2]
            if w in _SMALL:
                current += _SMALL[w]
            elif w in _TENS:
                current += _TENS[w]
            elif w == "hundred" and seen:
                current = max(current, 1) * 100
            elif w in _SCALES and seen:
                total, current = total + max(current, 1) * _SCALES[w], 0
            elif w == "and" and seen and j + 1 < len(words) and (
                    words[j + 1][2] in _SMALL or words[j + 1][2] in _TENS or words[j + 1][2] == "a"):
                j += 1
                continue
            elif w == "a" and seen and j + 1 < len(words) and words[j + 1][2] in ("half",
                                                                                 "quarter"):
                nxt = words[j + 1][2]
                total += current + Fraction(1, _DENOMS[nxt])
                current, end, j = 0, words[j + 1][1], j + 2
                seen = True
                break
            elif w in _DENOMS and seen and not total and 0 < current <= 20:
                current = Fraction(current, _DENOMS[w])
                end, j = words[j][1], j + 1
                break
            else:
                break
            seen, end, j = True, words[j][1], j + 1
        if seen:
            yield start, end, Fraction(total + current)
            i = max(j, i + 1)
        else:
            i += 1


def _numbers_in(text: str) -> Iterable[tuple[int, Fraction]]:
    """(position, value) of every number the hint writes: plain (with thousands separators of
    any kind), fractions, percents (also read as a share), powers and roots with exact rational
    values, and numbers in words."""
    from nudgelib.verify import NUMBER_RE

    for src in dict.fromkeys((text, _THOUSANDS_SEP.sub("", text))):
        for m in NUMBER_RE.finditer(src):
            try:
                v = Fraction(m.group().replace(",", ""))
            except (ValueError, ZeroDivisionError):
                continue
            yield m.start(), v
            if _PERCENT.match(src, m.end()):
                yield m.start(), v / 100
    for m in _FRACTION.finditer(text):
        g = m.groups()
        a, b = next((g[k], g[k + 1]) for k in (0, 2, 4) if g[k] is not None)
        na, nb = _number(a), _number(b)
        if na is not None and nb:
            yield m.start(), na / nb
    for m in _POWER.finditer(text):
        exp = next(x for x in m.groups()[1:] if x is not None)
        if len(m.group(1)) > 12 or len(exp) > 12:
            continue  # no answer has a 13-digit base; bound the work on untrusted text
        try:
            base, e = Fraction(m.group(1)), Fraction(exp)
        except ZeroDivisionError:  # 2^{1/0}
            continue
        if e.denominator == 1 and abs(e) <= 64 and base:
            yield m.start(), base ** int(e)
        elif e.denominator == 2 and abs(e.numerator) <= 8:
            r = _exact_sqrt(base)
            if r is not None:
                yield m.start(), r ** e.numerator
    for m in _ROOT.finditer(text):
        r = _exact_sqrt(Fraction(next(x for x in m.groups() if x is not None)))
        if r is not None:
            yield m.start(), r
    for start, end, v in _word_numbers(text):
        lone_small = v.denominator == 1 and 0 <= v <= 10 and " " not in text[start:end].strip() \
            and "-" not in text[start:end]
        if lone_small and not _RESULT_CUE.search(text[max(0, start - 24):start]):
            continue  # "add the two numbers", "one of the sides": incidental
        yield start, v
        if _PERCENT.match(text, end):
            yield start, v / 100


def _exact_sqrt(x: Fraction) -> Fraction | None:
    import math

    if x < 0:
        return None
    n, d = math.isqrt(x.numerator), math.isqrt(x.denominator)
    return Fraction(n, d) if n * n == x.numerator and d * d == x.denominator else None


def _incidental(text: str) -> set[int]:
    """Positions of step and list markers ("Step 2", "(2)", "2." at a line start)."""
    return {m.start(k) for m in _ENUMERATOR.finditer(text) for k in (1, 2, 3)
            if m.group(k) is not None}


def _root_spans(text: str) -> Iterable[str]:
    """Powers and roots of the hint, rewritten as LaTeX for math-verify: 2^{1/2}, \\sqrt{2}."""
    for m in _ROOT.finditer(text):
        yield "\\sqrt{" + next(x for x in m.groups() if x is not None) + "}"
    for m in _POWER.finditer(text):
        yield m.group(1) + "^{" + next(x for x in m.groups()[1:] if x is not None) + "}"


def hint_leaks_answer(hint: str, gold: str, *, timeout: float = 1.0) -> bool:
    """Does ``hint`` contain the gold answer?

    * numeric gold (``18``, ``1,000``, ``0.5``, ``\\frac{3}{4}``, ``\\frac34``, ``50\\%``): any
      number the hint writes with the same value, in any of the forms of :func:`_numbers_in` —
      ``18.0``, ``36/2``, ``eighteen``, ``1 000``, ``3/4`` for 0.75, ``50%`` for 0.5,
      ``2^3`` for 8, ``\\sqrt{16}`` for 4 (``180`` is not 18). Not counted, as incidental
      even when they equal the answer: step and list markers (``Step 2``, ``(2)``, a line
      starting ``2.``) and a lone small number word (zero to ten) that no result cue precedes
      (``add the two numbers``; but ``the total is six`` counts);
    * otherwise: the normalised gold (spaces, ``$``, braces, ``\\left`` ... removed) as a
      substring of the normalised hint, or a ``\\boxed{}`` / ``$...$`` span, power or root of
      the hint (``2^{1/2}``, ``sqrt(2)``) that math-verify proves equal to the gold, each check
      bounded by ``timeout`` seconds.
    """
    if not isinstance(hint, str) or not isinstance(gold, str):
        raise TypeError(f"hint and gold must be strings, got {type(hint).__name__} and "
                        f"{type(gold).__name__}")
    gold = gold.strip()
    if not gold:
        return False
    value = _number(gold)
    if value is not None:
        skip = _incidental(hint)
        return any(v == value and pos not in skip for pos, v in _numbers_in(hint))
    from nudgelib.verify import normalise_answer, verify

    g = normalise_answer(gold)
    if g and g in normalise_answer(hint):
        return True
    spans = [next(x for x in m.groups() if x is not None).strip()
             for m in _MATH_SPAN.finditer(hint)]
    for span in list(dict.fromkeys(spans + list(_root_spans(hint))))[:32]:
        if span and verify(gold, f"\\boxed{{{span}}}", timeout=timeout).correct:
            return True
    return False


# ----------------------------------------------------------------------------- the bank

@dataclass
class HintBank:
    """Hints keyed by (problem id, hint type), held in a :class:`datasets.Dataset`.

    ``stats`` carries generation statistics (first-try leak rate, seconds per hint) when the
    bank was generated here; they are not part of the dataset.
    """

    dataset: object  # datasets.Dataset with the columns of COLUMNS
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        cols = set(getattr(self.dataset, "column_names", []) or [])
        missing = [c for c in ("problem_id", "hint_type", "hint", "source", "leak") if c not in cols]
        if missing:
            raise HintBankError(f"hint bank dataset lacks column(s) {missing}; expected the "
                                f"columns {list(COLUMNS)}")
        self._index: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        cols = (self.dataset[c] for c in ("problem_id", "hint_type", "hint", "leak"))
        for i, (pid, kind, text, leak) in enumerate(zip(*cols)):
            if not isinstance(pid, str) or not pid:
                raise HintBankError(f"hint bank row {i}: problem_id must be a non-empty string, "
                                    f"got {pid!r}")
            if not isinstance(kind, str) or not kind:
                raise HintBankError(f"hint bank row {i}: hint_type must be a non-empty string "
                                    f"such as {HINT_TYPES}, got {kind!r}")
            if not isinstance(text, str):
                raise HintBankError(f"hint bank row {i}: hint must be a string, got {text!r}")
            self._index.setdefault((pid, kind), []).append((text, bool(leak)))

    # -- construction
    @classmethod
    def from_records(cls, records: Sequence[Mapping], stats: dict | None = None) -> HintBank:
        from datasets import Dataset

        rows = {c: [] for c in COLUMNS}
        for i, r in enumerate(records):
            for c in ("problem_id", "hint_type", "hint"):
                if c not in r:
                    raise HintBankError(f"hint record {i} lacks {c!r}: {dict(r)}")
            rows["problem_id"].append(str(r["problem_id"]))
            rows["hint_type"].append(str(r["hint_type"]))
            rows["hint"].append(str(r["hint"]))
            rows["source"].append(str(r.get("source", "")))
            rows["leak"].append(bool(r.get("leak", False)))
            rows["attempts"].append(int(r.get("attempts", 1)))
            rows["seconds"].append(float(r.get("seconds", 0.0)))
        from datasets import Features, Value

        feats = Features({"problem_id": Value("string"), "hint_type": Value("string"),
                          "hint": Value("string"), "source": Value("string"),
                          "leak": Value("bool"), "attempts": Value("int32"),
                          "seconds": Value("float32")})
        return cls(Dataset.from_dict(rows, features=feats), dict(stats or {}))

    @classmethod
    def load(cls, path) -> HintBank:
        """``datasets.load_from_disk(path)`` wrapped as a bank."""
        from datasets import load_from_disk

        return cls(load_from_disk(str(path)))

    def save(self, path) -> None:
        """``dataset.save_to_disk(path)``."""
        self.dataset.save_to_disk(str(path))

    @staticmethod
    def merge(banks: Iterable[HintBank]) -> HintBank:
        records = [r for b in banks for r in b.records()]
        return HintBank.from_records(records)

    # -- access
    def __len__(self) -> int:
        return len(self.dataset)

    def records(self) -> list[dict]:
        return self.dataset.to_list()

    def to_pandas(self):
        return self.dataset.to_pandas()

    def lookup(self, problem_id: str, hint_type: str = "abstract", *,
               include_leaky: bool = False) -> str | None:
        """The first hint of this type for the problem, or None. A hint flagged as leaking is
        served only when asked (or when its type leaks by design, :data:`LEAKS_BY_DESIGN`)."""
        leaky_ok = include_leaky or hint_type in LEAKS_BY_DESIGN
        for text, leak in self._index.get((problem_id, hint_type), ()):
            if leaky_ok or not leak:
                return text
        return None

    def recheck_leaks(self, problems: Iterable[Problem]) -> int:
        """Check every stored hint of ``problems`` against their gold answers again (a bank
        edited by hand, or made for other golds): one that leaks is flagged, so it is no
        longer served. Returns how many rows were newly flagged."""
        gold = {p.id: p.answer for p in problems}
        cols = [self.dataset[c] for c in ("problem_id", "hint_type", "hint", "leak")]
        new = [bool(lk) or (k not in LEAKS_BY_DESIGN and pid in gold
                            and hint_leaks_answer(text, gold[pid])) for pid, k, text, lk in
               zip(*cols)]
        flagged = sum(new) - sum(map(bool, cols[3]))
        if flagged:
            self.dataset = self.dataset.remove_columns("leak").add_column("leak", new)
            self.__post_init__()
        return flagged

    def leak_rate(self, hint_type: str | None = None) -> float:
        """Share of stored hints flagged as leaking (of this type, or all)."""
        flags = [lk for lk, k in zip(self.dataset["leak"], self.dataset["hint_type"])
                 if hint_type is None or k == hint_type]
        return sum(flags) / len(flags) if flags else 0.0


# ----------------------------------------------------------------------------- generation

def _clean(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^(?:\*\*)?(?:hint|first steps?)\s*:?(?:\*\*)?\s*", "", text, flags=re.I)
    return text[:MAX_HINT_CHARS].strip()


@contextmanager
def _raw_prompts(policy):
    """Generation prompts carry their own instructions: switch the policy's answer
    instruction off for the duration (HFPolicy appends it to every prompt)."""
    old = getattr(policy, "instruction", None)
    if old is not None:
        policy.instruction = ""
    try:
        yield
    finally:
        if old is not None:
            policy.instruction = old


def _generate(policy, prompts: list[str], *, max_new_tokens: int, temperature: float,
              top_p: float, generator, batch_size: int) -> list[str]:
    out = []
    for i in range(0, len(prompts), batch_size):
        s = policy.sample(prompts[i:i + batch_size], 1, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, generator=generator)
        out.extend(s.texts)
    return out


def generate_hints(policy, problems: Sequence[Problem], hint_type: str = "abstract", *,
                   source: str = "self", templates: Mapping[str, str | None] | None = None,
                   explanation_template: str = EXPLANATION_TEMPLATE,
                   max_explanation_tokens: int = 192, max_hint_tokens: int = 64,
                   temperature: float = 0.7, top_p: float = 1.0,
                   generator: torch.Generator | None = None, batch_size: int = 16,
                   on_leak: str = "regenerate", max_attempts: int = 3,
                   leak_timeout: float = 1.0, progress: bool = False) -> HintBank:
    """Hints of ``hint_type`` for ``problems``, written by ``policy`` in two calls (see module).

    ``source="self"`` when ``policy`` is the model being trained; any other policy is a
    teacher (``source="teacher:<name>"``). ``on_leak``: ``regenerate`` re-runs the hint call
    (and, from the second retry on, the explanation) up to ``max_attempts`` times and drops a
    hint that still leaks; ``drop`` drops it at once; ``keep`` keeps it flagged ``leak=True``.
    ``stats`` of the bank reports ``first_try_leak_rate`` (the leakage rate of the model's
    hints), ``dropped``, and ``seconds_per_hint`` (all generation time / hints asked for).
    """
    templates = dict(HINT_TEMPLATES if templates is None else templates)
    if hint_type not in templates:
        raise ValueError(f"hint_type={hint_type!r} has no template; expected one of "
                         f"{sorted(templates)}")
    if on_leak not in ON_LEAK:
        raise ValueError(f"on_leak={on_leak!r}; expected one of {ON_LEAK}")
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
    problems = list(problems)
    if not problems:
        raise ValueError("generate_hints needs at least one problem")
    from nudgelib.progress import progress_bar

    generator = generator or torch.Generator().manual_seed(0)
    template = templates[hint_type]
    calls = model_calls(template)
    needs_model = calls > 0
    explain = needs_model and not _question_only(template)
    if _question_only(template) and "{answer}" in template:
        raise ValueError(f"the {hint_type!r} template is a prompt on the question alone (no "
                         f"{{explanation}}) but shows {{answer}}: such hints must be written "
                         f"without the answer")
    n = len(problems)
    texts: list[str | None] = [None] * n
    explanations: list[str | None] = [None] * n
    attempts = [0] * n
    leaks = [False] * n
    first_leak = [False] * n
    t0 = time.perf_counter()
    todo = list(range(n))
    bar = progress_bar(total=n, desc=f"{source} {hint_type} hints", disable=not progress, leave=False)
    for attempt in range(max_attempts if needs_model else 1):
        if not todo:
            break
        if needs_model:
            with _raw_prompts(policy):
                fresh = [i for i in todo if explanations[i] is None or attempt >= 2]
                if fresh and explain:
                    got = _generate(policy, [explanation_template.format(
                        question=problems[i].question, answer=problems[i].answer) for i in fresh],
                        max_new_tokens=max_explanation_tokens, temperature=temperature,
                        top_p=top_p, generator=generator, batch_size=batch_size)
                    for i, e in zip(fresh, got):
                        explanations[i] = e.strip()
                if template is None:
                    new = [explanations[i] for i in todo]
                else:
                    new = _generate(policy, [template.format(
                        question=problems[i].question, answer=problems[i].answer,
                        explanation=explanations[i]) for i in todo],
                        max_new_tokens=max_hint_tokens, temperature=temperature, top_p=top_p,
                        generator=generator, batch_size=batch_size)
        else:
            new = [template.format(question=problems[i].question, answer=problems[i].answer)
                   for i in todo]
        still = []
        for i, text in zip(todo, new):
            texts[i] = _clean(text) if needs_model else text
            attempts[i] += 1
            leaks[i] = hint_leaks_answer(texts[i], problems[i].answer, timeout=leak_timeout)
            if attempt == 0:
                first_leak[i] = leaks[i]
            if leaks[i] and on_leak == "regenerate" and needs_model:
                still.append(i)
            else:
                bar.update(1)
        todo = still
    bar.close()
    seconds = time.perf_counter() - t0
    records, dropped = [], 0
    for i, p in enumerate(problems):
        if leaks[i] and on_leak != "keep" and hint_type not in LEAKS_BY_DESIGN:
            dropped += 1
            continue
        if not texts[i]:
            dropped += 1
            continue
        records.append({"problem_id": p.id, "hint_type": hint_type, "hint": texts[i],
                        "source": source, "leak": leaks[i], "attempts": attempts[i],
                        "seconds": seconds / n})
    stats = {"hint_type": hint_type, "source": source, "asked": n, "kept": len(records),
             "dropped": dropped, "first_try_leak_rate": sum(first_leak) / n,
             "seconds_per_hint": seconds / n, "model_calls_per_hint": calls}
    return HintBank.from_records(records, stats)


def _checked_records(items: Iterable[tuple[Problem, str]], hint_type: str, source: str,
                     on_leak: str) -> tuple[list[dict], int]:
    if on_leak not in ("drop", "keep"):
        raise ValueError(f"on_leak={on_leak!r}; expected 'drop' or 'keep' (fixed hints cannot "
                         f"be regenerated)")
    records, leaked = [], 0
    for p, text in items:
        leak = hint_leaks_answer(text, p.answer)
        leaked += leak
        if leak and on_leak == "drop" and hint_type not in LEAKS_BY_DESIGN:
            continue
        records.append({"problem_id": p.id, "hint_type": hint_type, "hint": text,
                        "source": source, "leak": leak})
    return records, leaked


def handwritten_hints(hints: Mapping[str, str], problems: Sequence[Problem], *,
                      hint_type: str = "abstract", source: str = "hand",
                      on_leak: str = "keep") -> HintBank:
    """A bank from hand-written ``{problem_id: hint}``; ids not among ``problems`` are an error."""
    by_id = {p.id: p for p in problems}
    unknown = sorted(set(hints) - set(by_id))
    if unknown:
        raise HintBankError(f"hints given for unknown problem id(s) {unknown[:5]}")
    records, leaked = _checked_records(((by_id[k], v) for k, v in hints.items()), hint_type,
                                       source, on_leak)
    return HintBank.from_records(records, {"asked": len(hints), "leaked": leaked,
                                           "first_try_leak_rate": leaked / max(1, len(hints))})


_CALC = re.compile(r"<<[^<>]*>>")


def reference_hints(problems: Sequence[Problem], hint_type: str = "partial_steps", *,
                    fraction: float = 0.5, on_leak: str = "drop") -> HintBank:
    """Teacher hints taken from each problem's human-written reference solution.

    ``partial_steps``: the first ``fraction`` of the solution's lines (at least one, never the
    last), GSM8K's ``<<...>>`` calculator notes removed; ``explanation``: the whole worked
    solution without its final-answer line; ``answer``: the gold answer. A partial hint that
    still contains the answer is dropped (``on_leak="drop"``) or kept flagged (``"keep"``).
    """
    if hint_type not in ("partial_steps", "explanation", "answer"):
        raise ValueError(f"reference_hints makes partial_steps, explanation or answer hints, "
                         f"not {hint_type!r} (an abstract hint needs a model: generate_hints)")
    items = []
    for p in problems:
        if hint_type == "answer":
            items.append((p, HINT_TEMPLATES["answer"].format(answer=p.answer)))
            continue
        lines = [ln.strip() for ln in _CALC.sub("", p.solution).splitlines()
                 if ln.strip() and not ln.strip().startswith("####")]
        if not lines:
            continue
        if hint_type == "partial_steps":
            if len(lines) < 2:
                continue  # a one-line solution has no partial step that is not the answer
            k = min(len(lines) - 1, max(1, round(len(lines) * fraction)))
            lines = lines[:k]
        items.append((p, " ".join(lines)))
    records, leaked = _checked_records(items, hint_type, "reference", on_leak)
    return HintBank.from_records(records, {"asked": len(problems), "leaked": leaked,
                                           "first_try_leak_rate": leaked / max(1, len(items))})


# ----------------------------------------------------------------------------- lookup

HintSource = Callable[[Problem, str], "str | None"]


def as_hint_source(hints) -> HintSource:
    """A function (problem, hint_type) -> hint or None from a bank, a dict or a callable.

    A dict maps problem id to a hint (any type) or to ``{hint_type: hint}``.
    """
    if isinstance(hints, HintBank):
        return lambda p, kind: hints.lookup(p.id, kind)
    if isinstance(hints, Mapping):
        def from_dict(p, kind):
            v = hints.get(p.id)
            return v.get(kind) if isinstance(v, Mapping) else v
        return from_dict
    if callable(hints):
        return hints
    raise TypeError(f"hints must be a HintBank, a dict or a callable (problem, hint_type) -> "
                    f"str | None; got {type(hints).__name__}")


# ----------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nudgelib.hints``: write a hint bank for a dataset, offline, before RL."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m nudgelib.hints",
                                 description="Generate a NuRL hint bank (saved as a datasets.Dataset).")
    ap.add_argument("--model", required=True,
                    help="hub id, local checkpoint or offline:smollm2-135m-instruct (the policy "
                         "you will train: self-hints; any other model: teacher hints)")
    ap.add_argument("--task", choices=("gsm8k", "math500"), default="gsm8k")
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, help="first N problems only")
    ap.add_argument("--types", nargs="+", default=["abstract"], choices=HINT_TYPES + CONTEXT_TYPES)
    ap.add_argument("--source", default="self", help="'self' or 'teacher:<name>'")
    ap.add_argument("--on-leak", choices=ON_LEAK, default="regenerate")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for dataset.save_to_disk")
    args = ap.parse_args(argv)
    from nudgelib.lm_policy import HFPolicy
    from nudgelib.problems import load_problems

    problems = load_problems(args.task, args.split, limit=args.limit)
    needs_model = any(model_calls(HINT_TEMPLATES[t]) for t in args.types)
    policy = HFPolicy.from_pretrained(args.model, lora_rank=0) if needs_model else None
    banks = [generate_hints(policy, problems, t, source=args.source, on_leak=args.on_leak,
                            batch_size=args.batch_size, progress=True,
                            generator=torch.Generator().manual_seed(args.seed))
             for t in args.types]
    bank = HintBank.merge(banks)
    bank.save(args.out)
    print(json.dumps({"out": args.out, "hints": len(bank),
                      "stats": [b.stats for b in banks]}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
