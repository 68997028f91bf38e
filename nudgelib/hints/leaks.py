"""The leak check: does a hint give away its problem's gold answer?

:func:`hint_leaks_answer` finds the gold answer in a hint as a number of equal value (digits,
words, fractions, percentages, powers and roots), as a normalised string, or verified equal by
math-verify on a math span of the hint, in bounded time. The paper enforces "no answer" only
through its prompt; the check is nudgelib's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction

from nudgelib.tasks.verify import NUMBER_RE, as_number, normalise_answer, verify

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
    g = normalise_answer(gold)
    if g and g in normalise_answer(hint):
        return True
    spans = [next(x for x in m.groups() if x is not None).strip()
             for m in _MATH_SPAN.finditer(hint)]
    for span in list(dict.fromkeys(spans + list(_root_spans(hint))))[:32]:
        if span and verify(gold, f"\\boxed{{{span}}}", timeout=timeout).correct:
            return True
    return False
