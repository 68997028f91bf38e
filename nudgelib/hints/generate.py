"""Writing hints: prompt templates, self-generated and teacher hints, hand-written and
reference hints, each checked for leaks and returned as a :class:`~nudgelib.hints.bank.HintBank`.

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
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager

import torch

from nudgelib.hints.bank import LEAKS_BY_DESIGN, MAX_HINT_CHARS, ON_LEAK, HintBank, HintBankError
from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks.problems import Problem
from nudgelib.ui.progress import progress_bar

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
              top_p: float, generator, batch_size: int) -> tuple[list[str], list[int], int]:
    """One completion per prompt: (the texts, the tokens each took, the sampling calls made)."""
    texts, lengths, calls = [], [], 0
    for i in range(0, len(prompts), batch_size):
        s = policy.sample(prompts[i:i + batch_size], 1, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, generator=generator)
        texts.extend(s.texts)
        lengths.extend(s.lengths.tolist())
        calls += 1
    return texts, lengths, calls


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
    hints), ``dropped``, ``seconds_per_hint`` (all generation time / hints asked for), and what
    writing them cost: ``model_calls`` (sampling calls) and ``tokens`` (tokens generated, retries
    and dropped hints included; each kept hint's share is its ``tokens`` column)."""
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
    tokens = [0] * n  # generated for each problem's hint, every call and retry
    sampling_calls = 0
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
                    got, lengths, made = _generate(policy, [explanation_template.format(
                        question=problems[i].question, answer=problems[i].answer) for i in fresh],
                        max_new_tokens=max_explanation_tokens, temperature=temperature,
                        top_p=top_p, generator=generator, batch_size=batch_size)
                    sampling_calls += made
                    for i, e, k in zip(fresh, got, lengths):
                        explanations[i] = e.strip()
                        tokens[i] += k
                if template is None:
                    new = [explanations[i] for i in todo]
                else:
                    new, lengths, made = _generate(policy, [template.format(
                        question=problems[i].question, answer=problems[i].answer,
                        explanation=explanations[i]) for i in todo],
                        max_new_tokens=max_hint_tokens, temperature=temperature, top_p=top_p,
                        generator=generator, batch_size=batch_size)
                    sampling_calls += made
                    for i, k in zip(todo, lengths):
                        tokens[i] += k
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
                        "seconds": seconds / n, "tokens": tokens[i]})
    stats = {"hint_type": hint_type, "source": source, "asked": n, "kept": len(records),
             "dropped": dropped, "first_try_leak_rate": sum(first_leak) / n,
             "seconds_per_hint": seconds / n, "model_calls_per_hint": calls,
             "model_calls": sampling_calls, "tokens": sum(tokens)}
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
    return HintBank.from_records(records, {"hint_type": hint_type, "asked": len(hints),
                                           "leaked": leaked, "model_calls": 0, "tokens": 0,
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
    return HintBank.from_records(records, {"hint_type": hint_type, "asked": len(problems),
                                           "leaked": leaked, "model_calls": 0, "tokens": 0,
                                           "first_try_leak_rate": leaked / max(1, len(items))})
