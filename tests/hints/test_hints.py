"""Hints: the leakage check, two-call generation, leak policies, and the bank as a Dataset."""

import re

import pytest

from nudgelib.hints.bank import HintBank, HintBankError, as_hint_source
from nudgelib.hints.generate import (
    EXPLANATION_TEMPLATE,
    HINT_TEMPLATES,
    generate_hints,
    handwritten_hints,
    reference_hints,
)
from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks.addition import addition_hint_text
from nudgelib.tasks.problems import Problem
from tests.test_nudging import ScriptedPolicy

LEAK_CASES = [
    # (hint, gold, leaks) -- plain numbers and their written forms
    ("Multiply 3 by 6 to get 18.", "18", True),
    ("It is 18.0 km", "18", True),
    ("Try 180 first, then 118", "18", False),  # digits of another number are not the answer
    ("x is 5", "18", False),
    ("", "18", False),
    ("The total is 1,000 dollars", "1000", True),
    ("The total is 1 000 dollars", "1000", True),  # thousands separated by a space
    ("about 1\\,000 of them", "1000", True),  # LaTeX thin space
    ("count 12 345 cells", "12345", True),
    ("we have 3 000 and 5", "8", False),
    # numbers in words
    ("It comes to eighteen apples.", "18", True),
    ("one hundred twenty-three in all", "123", True),
    ("two thousand and five", "2005", True),
    ("Eighteen is close but not it; think of the tens.", "81", False),
    ("the seventh day", "7", False),  # an ordinal is not the number
    ("three quarters of the cake", "0.75", True),
    ("one and a half hours", "1.5", True),
    # fractions, decimals and percents
    ("half of it: 1/2", "0.5", True),
    ("use 0.75 of the area", "\\frac{3}{4}", True),
    ("use 3/4 of the area", "\\frac34", True),
    ("use $\\frac{3}{4}$ of it", "\\frac34", True),
    ("it is \\frac34 of the whole", "0.75", True),
    ("a 50% chance", "0.5", True),
    ("a 50\\% chance", "0.5", True),
    ("fifty percent of them", "0.5", True),
    ("one in four: 0.25", "25\\%", True),
    ("divide 12/5 by 2", "2.4", True),
    ("the ratio 2/3", "0.5", False),
    # powers and roots
    ("Consider the answer $\\sqrt{2}$", "\\sqrt 2", True),  # math-verify: equal expressions
    ("It equals 2^{1/2}.", "\\sqrt{2}", True),
    ("try sqrt(2)", "\\sqrt{2}", True),
    ("raise 2^3", "8", True),
    ("take \\sqrt{16}", "4", True),
    ("the side is \\sqrt{15}", "4", False),
    ("Consider the ratio of the sides", "\\sqrt{2}", False),
    # names and expressions
    ("Evelyn runs fastest", "\\text{Evelyn}", True),
    ("Compare the runners' times", "\\text{Evelyn}", False),
    # incidental numbers: step and list markers are not the answer
    ("Step 2: add the prices.", "2", False),
    ("1. Find the total.\n2. Divide by the number of days.", "2", False),
    ("(3) use the area formula", "3", False),
    ("Step 2: the result is 2.", "2", True),
    ("Add the two numbers first.", "2", False),  # a lone small number word, no result cue
    ("one of the sides is longer", "1", False),
    ("so the total is six", "6", True),
    ("twenty-two in all", "22", True),
]
"""Leak / no-leak cases worked out by hand (issue 20: >= 30)."""


@pytest.mark.parametrize("hint,gold,leaks", LEAK_CASES)
def test_leak_check(hint, gold, leaks):
    assert hint_leaks_answer(hint, gold) is leaks


def test_leak_check_is_safe_and_fast_on_hostile_hints():
    import time

    assert hint_leaks_answer("2^{1/0} and 10^{1/00}", "4") is False  # no division by zero
    t0 = time.perf_counter()
    huge = "9" * 5000 + "^64 " + "one hundred and " * 20_000 + "7 000 " * 20_000
    assert hint_leaks_answer(huge, "123456789") is False
    assert time.perf_counter() - t0 < 5


def test_leak_check_table_is_large_and_balanced():
    assert len(LEAK_CASES) >= 30
    assert 10 <= sum(leaks for *_, leaks in LEAK_CASES) <= len(LEAK_CASES) - 10


def test_leak_check_rejects_non_strings():
    with pytest.raises(TypeError, match="must be strings"):
        hint_leaks_answer(None, "3")


PROBS = [Problem(id=f"p{i}", question=f"What is {i}+{i}?", answer=str(2 * i)) for i in (3, 4, 5)]


def test_self_hints_take_two_calls_with_the_library_templates():
    pol = ScriptedPolicy(lambda p: "EXPL" if p.startswith("Question") and "Explain" in p
                         else "Add the two numbers.")
    pol.instruction = "Answer in a box."  # must be switched off while hints are written
    bank = generate_hints(pol, PROBS, "abstract")
    assert len(pol.calls) == 2
    q = PROBS[0]
    assert pol.calls[0][0] == EXPLANATION_TEMPLATE.format(question=q.question, answer=q.answer)
    assert pol.calls[1][0] == HINT_TEMPLATES["abstract"].format(
        question=q.question, answer=q.answer, explanation="EXPL")
    assert pol.instruction == "Answer in a box."
    assert bank.lookup("p3") == "Add the two numbers."
    assert bank.stats["first_try_leak_rate"] == 0 and bank.stats["model_calls_per_hint"] == 2
    assert bank.records()[0]["source"] == "self" and bank.records()[0]["leak"] is False
    # what writing cost, by hand: a character is a token, plus the EOS; "EXPL" 5 and
    # "Add the two numbers." 21 tokens a hint, three hints in one call each way
    assert [r["tokens"] for r in bank.records()] == [26, 26, 26]
    assert bank.writing_cost() == {"model_calls": 2, "tokens": 78}


def test_leaking_hints_are_regenerated_then_dropped_or_kept_flagged():
    state = {"n": 0}

    def rule(p):
        if "Explain" in p:
            return "because"
        state["n"] += 1
        # p3 (answer 6) leaks on its first try only; p4 (answer 8) always leaks
        if "4+4" in p or ("3+3" in p and state["n"] <= 3):
            return "The result is 6, no wait, 8."
        return "Double the number."

    bank = generate_hints(ScriptedPolicy(rule), PROBS, "abstract", max_attempts=3)
    assert bank.stats["first_try_leak_rate"] == pytest.approx(2 / 3)
    assert bank.stats["dropped"] == 1 and bank.lookup("p4") is None
    assert bank.lookup("p3") == "Double the number."
    assert bank.to_pandas().set_index("problem_id").loc["p3", "attempts"] == 2
    # the cost of every try, by hand ("because" 8 tokens, the leaking hint 29, "Double the
    # number." 19): p3 8 + 29 + 19; p4 (dropped) two explanations and three hints, 16 + 87;
    # p5 8 + 19. Calls: explanations, hints; hints (p3, p4); explanation, hint (p4)
    assert bank.to_pandas().set_index("problem_id").loc["p3", "tokens"] == 56
    assert bank.writing_cost() == {"model_calls": 5, "tokens": 56 + 103 + 27}
    state["n"] = 0
    kept = generate_hints(ScriptedPolicy(rule), PROBS, "abstract", on_leak="keep")
    assert kept.leak_rate() == pytest.approx(2 / 3)
    assert kept.lookup("p4") is None and kept.lookup("p4", include_leaky=True) is not None
    with pytest.raises(ValueError, match="on_leak='retry'"):
        generate_hints(ScriptedPolicy(rule), PROBS, on_leak="retry")
    with pytest.raises(ValueError, match="hint_type='cue'"):
        generate_hints(ScriptedPolicy(rule), PROBS, hint_type="cue")


def test_explanation_and_answer_hints():
    pol = ScriptedPolicy(lambda p: "Add three to three.")
    expl = generate_hints(pol, PROBS[:1], "explanation")
    assert expl.lookup("p3", "explanation") == "Add three to three."
    said = generate_hints(ScriptedPolicy(lambda p: "Two threes make six."), PROBS[:1],
                          "explanation")
    assert said.lookup("p3", "explanation") is None  # "six" is the answer 6, in words
    assert said.stats["first_try_leak_rate"] == 1.0
    assert len(pol.calls) == 1  # the explanation is the hint: one call
    ans = generate_hints(pol, PROBS, "answer")
    assert len(pol.calls) == 1  # no model call at all
    assert ans.writing_cost() == {"model_calls": 0, "tokens": 0}
    assert expl.writing_cost() == {"model_calls": 1, "tokens": len("Add three to three.") + 1}
    assert ans.lookup("p3", "answer") == "The answer is 6."  # leaks by design, still served
    assert ans.leak_rate() == 1.0


def test_bank_round_trips_through_the_standard_datasets_calls(tmp_path):
    import datasets

    bank = handwritten_hints({"p3": "Double it.", "p4": "It is 8."}, PROBS)
    assert bank.leak_rate() == 0.5
    bank.dataset.save_to_disk(str(tmp_path / "b"))
    again = HintBank(datasets.load_from_disk(str(tmp_path / "b")))
    assert again.records() == bank.records()
    assert again.lookup("p3") == "Double it." and again.lookup("p4") is None
    assert HintBank.load(tmp_path / "b").records() == bank.records()
    # HintBank.save: the same dataset, plus its statistics and a manifest
    bank.save(tmp_path / "c")
    loaded = HintBank.load(tmp_path / "c")
    assert loaded.records() == bank.records() and loaded.stats == bank.stats
    assert loaded.fingerprint() == bank.fingerprint() == again.fingerprint()
    assert datasets.load_from_disk(str(tmp_path / "c")).to_list() == bank.records()
    edited = handwritten_hints({"p3": "Double it!", "p4": "It is 8."}, PROBS)
    assert edited.fingerprint() != bank.fingerprint()
    with pytest.raises(HintBankError, match="exists and is not a saved hint bank"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("a user's file")
        bank.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"
    src = as_hint_source(again)
    assert src(PROBS[0], "abstract") == "Double it." and src(PROBS[2], "abstract") is None


def test_malformed_banks_name_the_column_or_row():
    import datasets

    with pytest.raises(HintBankError, match=r"lacks column\(s\) \['leak'\]"):
        HintBank(datasets.Dataset.from_dict({"problem_id": ["a"], "hint_type": ["abstract"],
                                             "hint": ["x"], "source": ["hand"]}))
    with pytest.raises(HintBankError, match="row 1: problem_id"):
        HintBank(datasets.Dataset.from_dict({"problem_id": ["a", ""], "hint_type": ["x", "x"],
                                             "hint": ["x", "y"], "source": ["", ""],
                                             "leak": [False, False]}))
    with pytest.raises(HintBankError, match="unknown problem id"):
        handwritten_hints({"nope": "x"}, PROBS)


def test_reference_hints_from_real_gsm8k_solutions(real_data):
    probs = real_data("gsm8k", "train", limit=50)
    bank = reference_hints(probs, "partial_steps")
    by_id = {p.id: p for p in probs}
    assert len(bank) >= 30
    for r in bank.records():
        p = by_id[r["problem_id"]]
        assert "<<" not in r["hint"] and "####" not in r["hint"]
        lines = [ln.strip() for ln in re.sub(r"<<[^<>]*>>", "", p.solution).splitlines()
                 if ln.strip() and not ln.strip().startswith("####")]
        whole = " ".join(lines)
        assert whole.startswith(r["hint"]) and len(r["hint"]) < len(whole)  # a proper prefix
        assert not r["leak"] and not hint_leaks_answer(r["hint"], p.answer)
    assert bank.stats["leaked"] >= 1  # some first halves already state the answer: dropped
    with pytest.raises(ValueError, match="needs a model"):
        reference_hints(probs, "abstract")


def test_addition_hints_by_hand():
    assert addition_hint_text("345+278=", "623", "answer") == "H623"
    assert addition_hint_text("345+278=", "623", "partial_steps") == "H62."
    # columns 5+8 = 13 (carry), 4+7+1 = 12 (carry), 3+2+1 = 6 (none), units first
    assert addition_hint_text("345+278=", "623", "abstract") == "Hcyyn"
    assert addition_hint_text("345+278=", "623", "explanation") == "Hcyyn..."
    assert addition_hint_text("3+4=", "7", "abstract") == "Hcn"
    assert addition_hint_text("99+5=", "104", "explanation") == "Hcyy..."
    assert addition_hint_text("99+5=", "104", "strategy") == "Hcarry"
    assert addition_hint_text("12+34=", "46", "strategy") == "Hplain"


def test_toy_hints_leak_exactly_where_they_should():
    """Issue 20's acceptance: on every training problem of both toys, every hint type except
    'answer' passes the leak check and 'answer' hints fail it."""
    from nudgelib.experiments.toy_nurl import ToyNuRLConfig, make_task
    from nudgelib.tasks.addition import addition_problems
    from nudgelib.toy import TOY_HINT_TYPES, toy_hint

    _, table, _ = make_task(ToyNuRLConfig(), seed=1000)
    addition = addition_problems({1: 100, 2: 300, 3: 300}, seed=0)
    for probs in (table, addition):
        for kind in TOY_HINT_TYPES:
            leaks = [hint_leaks_answer(toy_hint(p, kind), p.answer)
                     for p in probs]
            assert all(leaks) if kind == "answer" else not any(leaks), (probs[0].source, kind)


def test_strategy_contexts_are_written_from_the_question_alone():
    """NudgeRL's contexts (issue 20): one model call per hint that never shows the answer."""
    from nudgelib.hints.bank import CONTEXT_TYPES
    from nudgelib.hints.generate import HINT_TEMPLATES

    pol = ScriptedPolicy(lambda p: "work backwards")
    bank = generate_hints(pol, PROBS, "strategy")
    assert len(pol.calls) == 1 and bank.stats["model_calls_per_hint"] == 1
    assert all("answer" not in prompt.lower() or "answer is" not in prompt.lower()
               for prompt in pol.calls[0])
    assert all("Correct answer" not in prompt for prompt in pol.calls[0])
    assert bank.lookup(PROBS[0].id, "strategy") == "work backwards"
    assert all("{answer}" not in HINT_TEMPLATES[t] for t in CONTEXT_TYPES)
    with pytest.raises(ValueError, match="shows {answer}"):
        generate_hints(pol, PROBS, "strategy",
                       templates={"strategy": "Question: {question} (answer {answer})"})
