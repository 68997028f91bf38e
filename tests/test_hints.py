"""Hints: the leakage check, two-call generation, leak policies, and the bank as a Dataset."""

import re

import pytest

from nudgelib.hints import (
    EXPLANATION_TEMPLATE,
    HINT_TEMPLATES,
    HintBank,
    HintBankError,
    as_hint_source,
    generate_hints,
    handwritten_hints,
    hint_leaks_answer,
    reference_hints,
)
from nudgelib.problems import Problem
from nudgelib.toy import addition_hint_text
from tests.test_nudging import ScriptedPolicy


@pytest.mark.parametrize("hint,gold,leaks", [
    ("Multiply 3 by 6 to get 18.", "18", True),
    ("It is 18.0 km", "18", True),
    ("Try 180 first, then 118", "18", False),  # digits of another number are not the answer
    ("The total is 1,000 dollars", "1000", True),
    ("half of it: 1/2", "0.5", True),
    ("use 0.75 of the area", "\\frac{3}{4}", True),
    ("use $\\frac{3}{4}$ of it", "\\frac34", True),
    ("Consider the answer $\\sqrt{2}$", "\\sqrt 2", True),  # math-verify: equal expressions
    ("Consider the ratio of the sides", "\\sqrt{2}", False),
    ("Evelyn runs fastest", "\\text{Evelyn}", True),
    ("x is 5", "18", False),
    ("", "18", False),
])
def test_leak_check(hint, gold, leaks):
    assert hint_leaks_answer(hint, gold) is leaks


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
    state["n"] = 0
    kept = generate_hints(ScriptedPolicy(rule), PROBS, "abstract", on_leak="keep")
    assert kept.leak_rate() == pytest.approx(2 / 3)
    assert kept.lookup("p4") is None and kept.lookup("p4", include_leaky=True) is not None
    with pytest.raises(ValueError, match="on_leak='retry'"):
        generate_hints(ScriptedPolicy(rule), PROBS, on_leak="retry")
    with pytest.raises(ValueError, match="hint_type='cue'"):
        generate_hints(ScriptedPolicy(rule), PROBS, hint_type="cue")


def test_explanation_and_answer_hints():
    pol = ScriptedPolicy(lambda p: "Two threes make six.")
    expl = generate_hints(pol, PROBS[:1], "explanation")
    assert expl.lookup("p3", "explanation", include_leaky=True) == "Two threes make six."
    assert len(pol.calls) == 1  # the explanation is the hint: one call
    ans = generate_hints(pol, PROBS, "answer")
    assert len(pol.calls) == 1  # no model call at all
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
    assert addition_hint_text("345+278=", "623", "abstract") == "H6.."
    assert addition_hint_text("345+278=", "623", "explanation") == "Hc110"  # 13, 12, 6
    assert addition_hint_text("3+4=", "7", "abstract") == "H."
    assert addition_hint_text("99+5=", "104", "explanation") == "Hc11"
