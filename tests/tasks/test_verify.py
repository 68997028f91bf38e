import os
import random
import subprocess
import sys
import threading
import time
from fractions import Fraction

import pytest

from nudgelib.tasks import verify as V
from tests.tasks.hostile_outputs import CANARY, hostile_outputs


@pytest.fixture(scope="module", autouse=True)
def _warm():
    V.warmup()


# ----------------------------------------------------------------------------- extraction

@pytest.mark.parametrize(
    "text, want",
    [
        ("so \\boxed{42}.", "42"),
        ("first \\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # the LAST box
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),  # nested braces
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are literal
        ("\\boxed{7} and then \\boxed{unterminated", "7"),  # last WELL-FORMED box
        ("\\fbox{5}", "5"),
        ("\\boxed 5", "5"),
        ("\\boxed { 12 }", "12"),
        ("Work.\n#### 1,250\n", "1,250"),
        ("#### 3\nmore\n#### 4", "4"),
        ("Thus the answer is 3.5.", "3.5"),
        ("The final answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("**Answer:** 17", "17"),
        ("Final Answer: x = 5", "x = 5"),
        ("\\boxed{1} ... #### 2", "1"),  # boxed has priority
        ("no answer here", None),
        ("", None),
        ("\\boxed{}", None),
    ],
)
def test_extract_answer(text, want):
    assert V.extract_answer(text) == want


def test_extract_strategies_are_configurable():
    text = "\\boxed{1}\n#### 2"
    assert V.extract_answer(text, strategies=("gsm8k", "boxed")) == "2"
    assert V.extract_answer("the answer is 3", strategies=("boxed",)) is None
    with pytest.raises(ValueError, match="unknown extraction strategy 'xml'"):
        V.extract_answer(text, strategies=("xml",))


def test_completion_shapes():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\boxed{8}"}]
    assert V.extract_answer(msgs) == "8"
    assert V.extract_answer({"role": "assistant", "content": "#### 9"}) == "9"
    assert V.completion_text(None) == "" and V.completion_text(3) == ""


# ----------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize(
    "gold, completion",
    [
        ("\\frac{14}{3}", "\\boxed{\\dfrac{14}{3}}"),
        ("\\frac{14}{3}", "\\boxed{14/3}"),
        ("0.5", "\\boxed{\\frac{1}{2}}"),
        ("1,250", "#### 1250"),
        ("18", "She makes \\$18. #### $18"),
        ("90^\\circ", "\\boxed{90}"),  # units
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}"),  # tuples
        ("[-2, 7]", "\\boxed{[-2,7]}"),  # intervals
        ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}"),  # sets are unordered
        ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}"),
        ("x^2+7x+10", "\\boxed{(x+2)(x+5)}"),
        ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}"),
        ("6 - 5i", "\\boxed{6-5i}"),
        (42, "The answer is 42."),
    ],
)
def test_equivalent_answers_are_correct(gold, completion):
    r = V.verify(gold, completion)
    assert r.correct and r.reason == "correct", r


@pytest.mark.parametrize(
    "gold, completion",
    [
        ("\\frac{14}{3}", "\\boxed{\\frac{3}{14}}"),
        ("18", "#### 19"),
        ("1000000", "\\boxed{1000001}"),
        ("[-2, 7]", "\\boxed{(-2,7)}"),  # open vs closed interval
        ("\\text{Evelyn}", "\\boxed{\\text{Amy}}"),
        ("x^2+7x+10", "\\boxed{(x+2)(x+6)}"),
        ("1/3", "\\boxed{0.33}"),
    ],
)
def test_different_answers_are_rejected(gold, completion):
    r = V.verify(gold, completion)
    assert not r.correct and r.reason == "mismatch", r


def test_reasons_and_paths():
    assert V.verify("5", "I don't know").reason == "no_answer"
    r = V.verify("5", "\\boxed{5}")
    assert (r.reason, r.path, r.extracted) == ("correct", "fast", "5")
    r = V.verify("x^2", "\\boxed{x^{2}}")
    assert r.correct and r.path == "math_verify"
    r = V.verify("5", "\\boxed{" + "1+" * 600 + "1}")
    assert (r.reason, r.correct) == ("parse_error", False)  # longer than MAX_ANSWER_CHARS
    r = V.verify("1", "\\boxed{9^{9^{9^{9^{9}}}}}", timeout=0.5)
    assert r.reason == "timeout" and not r.correct
    with pytest.raises(ValueError, match="timeout must be a positive"):
        V.verify("1", "1", timeout=0)


def test_fast_path_agrees_with_math_verify():
    """The fast path decides only where math-verify gives the same verdict."""
    rng = random.Random(0)
    forms = [
        lambda q: str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}",
        lambda q: f"\\frac{{{q.numerator}}}{{{q.denominator}}}",
        lambda q: f"{float(q):.6g}",
        lambda q: f"{float(q):,.2f}" if abs(q) >= 1000 else f"{float(q)}",
    ]
    pairs = []
    for _ in range(300):
        a = Fraction(rng.randint(-3000, 3000), rng.choice([1, 1, 1, 2, 3, 4, 8, 10]))
        b = a if rng.random() < 0.5 else a + rng.choice([1, -1, Fraction(1, 10**rng.randint(1, 8))])
        pairs.append((rng.choice(forms)(a), rng.choice(forms)(b)))
    pairs += [("1,000", "1000"), ("5", "5.0"), ("0.5", ".5"), ("-3", "-3.00"), ("7", "-7"),
              ("123456789012345", "123456789012346")]
    decided = 0
    for gold, pred in pairs:
        fast = V._fast_compare(gold, pred)
        if fast is None:
            continue
        decided += 1
        slow = V.math_verify_check(gold, pred, 5)
        assert (slow == "correct") == fast, (gold, pred, fast, slow)
    assert decided > 150  # the fast path really is used


# ----------------------------------------------------------------------------- hostile input

def _run_hostile(timeout: float):
    out = []
    for label, completion in hostile_outputs():
        t0 = time.perf_counter()
        r = V.verify("42", completion, timeout=timeout)
        out.append((label, r, time.perf_counter() - t0))
    return out


@pytest.mark.parametrize("where", ["main", "thread"])
def test_hostile_outputs_are_contained(where):
    if os.path.exists(CANARY):
        os.remove(CANARY)
    timeout = 1.0
    if where == "main":
        results = _run_hostile(timeout)
    else:
        box = []
        th = threading.Thread(target=lambda: box.append(_run_hostile(timeout)))
        th.start()
        th.join(600)
        assert box, "the worker thread did not finish"
        results = box[0]
    assert len(results) >= 50
    for label, r, secs in results:
        assert isinstance(r, V.VerifyResult), label
        assert secs <= timeout + 0.5, f"{label} took {secs:.2f}s"
        assert r.reason in {"correct", "mismatch", "no_answer", "parse_error", "timeout", "error"}
    assert not os.path.exists(CANARY), "a hostile output was executed"
    by_label = {label: r for label, r, _ in results}
    assert by_label["1MB-then-answer"].extracted == "42" and by_label["1MB-then-answer"].correct
    assert by_label["nul-bytes"].extracted == "42"
    assert not by_label["tower-caret"].correct


def test_batch_from_a_thread_matches_single_calls():
    golds = ["18", "\\frac{1}{2}", "x^2+7x+10", "5", "[-2, 7]", "42"]
    comps = ["#### 18", "\\boxed{0.5}", "\\boxed{(x+2)(x+5)}", "no idea", "\\boxed{(-2,7)}",
             "\\boxed{9^{9^{9^{9^{9}}}}}"]
    box = []
    th = threading.Thread(target=lambda: box.append(V.verify_batch(golds, comps, timeout=1.0)))
    th.start()
    th.join(60)
    batch = box[0]
    single = [V.verify(g, c, timeout=1.0) for g, c in zip(golds, comps)]
    assert [r.reason for r in batch] == [r.reason for r in single] == [
        "correct", "correct", "correct", "no_answer", "mismatch", "timeout"]
    with pytest.raises(ValueError, match="same length"):
        V.verify_batch(["1"], [])
    with pytest.raises(ValueError, match="workers must be a positive int"):
        V.verify_batch(["1"], ["1"], workers=0)


def test_server_restarts_after_it_dies():
    server = V._server()
    server.proc.kill()
    server.proc.wait()
    assert V.verify("x^2", "\\boxed{x^{2}}").correct  # a new server answers


def test_unguarded_script_works(tmp_path):
    """No multiprocessing re-import of __main__: a script without a main guard works."""
    script = tmp_path / "s.py"
    script.write_text("from nudgelib.tasks.verify import verify\n"
                      "print(verify('x^2+7x+10', '\\\\boxed{(x+2)(x+5)}').reason)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.stdout.strip() == "correct", out.stderr[-2000:]


# ----------------------------------------------------------------------------- real data

def test_math500_reference_solutions_verify(real_data):
    ps = real_data("math500")
    res = V.verify_batch([p.answer for p in ps], [p.solution for p in ps])
    bad = [(p.id, p.answer, r) for p, r in zip(ps, res) if not r.correct]
    assert len(ps) == 500 and not bad, bad[:10]


def test_gsm8k_reference_answers_verify(real_data):
    ps = real_data("gsm8k", "test")
    res = V.verify_batch([p.answer for p in ps], [p.solution for p in ps])
    assert len(ps) == 1319 and all(r.correct for r in res)


def _cross_pairs(ps):
    """Each gold with the solution of the next problem whose gold differs as a string."""
    n = len(ps)
    out = []
    for i, p in enumerate(ps):
        j = (i + 1) % n
        while ps[j].answer.replace(" ", "") == p.answer.replace(" ", ""):
            j = (j + 1) % n
        out.append((p.answer, ps[j].solution))
    return out


@pytest.mark.parametrize("name", ["math500", "gsm8k"])
def test_gold_with_another_solution_is_rejected(real_data, name):
    ps = real_data(name, "test")
    pairs = _cross_pairs(ps)
    res = V.verify_batch([g for g, _ in pairs], [s for _, s in pairs])
    rejected = sum(not r.correct for r in res) / len(res)
    assert rejected >= 0.995, [(g, r) for (g, _), r in zip(pairs, res) if r.correct][:10]


def test_benchmark_1000_gsm8k_completions_under_5s():
    """The committed benchmark's workload (bench/verify_speed.py) within its 5 s budget."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    from verify_speed import make_completions

    golds, comps, _ = make_completions(1000)
    t0 = time.perf_counter()
    res = V.verify_batch(golds, comps)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, elapsed
    assert sum(r.correct for r in res) == 600  # 3 of the 5 shapes state the right answer


@pytest.mark.parametrize("text", ["The answer is \\boxed{2", "The answer is \\frac{4}{2",
                                  "Final answer: \\fbox{2"])
def test_a_truncated_box_or_brace_states_no_answer(text):
    """Issue 22: an output cut inside its box has no well-formed answer; the phrase fallback
    must not pick the half box up (it did, and math-verify then closed it)."""
    assert V.extract_answer(text) is None
    assert not V.verify("2", text)


@pytest.mark.parametrize("digit", ["\u0663", "\uff13"])  # Arabic-Indic three, full-width three
def test_non_ascii_digits_are_decided_as_math_verify_decides(digit):
    """The fast path reads ASCII digits only; other digits go to math-verify, whose verdict
    (no) the fast path used to contradict."""
    assert V.as_number(digit) is None
    assert not V.verify("3", f"\\boxed{{{digit}}}")
    assert V.verify("3", "\\boxed{3}")


def test_load_does_not_turn_correct_answers_into_timeouts():
    """Issue 22: 8 hostile outputs that spend their whole deadline, 8 correct answers that need
    math-verify, 8 threads on this machine. With wall-clock deadlines and a child per request,
    correct answers timed out (bench/verify_load.py: 13/16 before, 16/16 now); the deadline is
    now CPU time measured in the child, with one child per CPU."""
    hostile = ["\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{100000000!}"]
    legit = [("x^2+7x+10", "\\boxed{(x+2)(x+5)}"), ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}")]
    golds, comps = [], []
    for i in range(8):
        golds += ["5", legit[i % 2][0]]
        comps += [hostile[i % 2], legit[i % 2][1]]
    res = V.verify_batch(golds, comps, timeout=0.5, workers=8)
    assert [r.reason for r in res[1::2]] == ["correct"] * 8
    assert all(r.reason == "timeout" for r in res[0::2]), [r.reason for r in res[0::2]]


@pytest.mark.parametrize("text", [
    "The answer" + " " * 99_000,  # was quadratic: 129.8 s at 10^5 (two adjacent \s*)
    "the answer is" + "\n" * 99_000,
    "answer **" + " " * 99_000 + "x",
    "#### 1" + " " * 99_000 + "x",  # was quadratic: a lazy answer before [ \t]*$
    ("#### 1" + " \t" * 5_000 + "x\n") * 9,
    "\\boxed" + " " * 99_000,
])
def test_answer_extraction_is_linear_on_long_blank_runs(text):
    """Hostile completions of ~10^5 characters: extraction takes milliseconds (each of these
    took 16-130 s before its pattern was made unambiguous), and a 10^6-character one is cut to
    the last MAX_TEXT_CHARS first."""
    import time

    t0 = time.perf_counter()
    V.extract_answer(text)
    V.extract_answer(text * 10)
    assert time.perf_counter() - t0 < 0.5


def test_unambiguous_patterns_extract_what_they_did():
    assert V.extract_answer("so #### 1,234  \t\nmore") == "1,234"
    assert V.extract_answer("#### 7\n#### 8   ") == "8"
    assert V.extract_answer("#### 1" + " " * 50 + "x") == "1" + " " * 50 + "x"
    assert V.extract_answer("The answer is **42**.") == "42"
    assert V.extract_answer("final answer:   ** $\\frac{1}{2}$ **") == "\\frac{1}{2}"
    assert V.extract_answer("answer = 5") == "5"
    assert V.extract_answer("the answer is\n\n") is None
