"""nudgelib.tasks.arithmetic: the short-answer task family of the CPU presets. Split by construction,
answers by hand, the echo guard of the short-answer rule, teacher hints that stop short of the
answer, and the config wiring (presets, validation, errors)."""

import itertools

import pytest

from nudgelib.hints.generate import reference_hints
from nudgelib.hints.leaks import hint_leaks_answer
from nudgelib.tasks import arithmetic as ar
from nudgelib.tasks.verify import extract_answer, verify
from nudgelib.training.build import build_hints, build_problems, build_scorer, build_val_problems
from nudgelib.training.config import ConfigError, get_train_config


def _operands(p):
    return tuple(int(x) for x in p.id.rsplit("/", 1)[1].split("_"))


@pytest.mark.parametrize("tier", list(ar.TIERS))
def test_splits_are_disjoint_by_operand_multiset_and_cover_the_tier(tier):
    train, held = ar.split_pool(tier, "train"), ar.split_pool(tier, "heldout")
    ms = lambda ps: {tuple(sorted(_operands(p))) for p in ps}  # noqa: E731
    assert not ms(train) & ms(held), "no held-out question is a reordering of a training one"
    assert not {p.question for p in train} & {p.question for p in held}
    assert len(train) + len(held) == len(ar._operands(tier)) and len(held) >= 20
    # both orders of a pair land on the same side
    for p in train[:50]:
        for perm in itertools.permutations(_operands(p)):
            assert ar.split_of(tier, perm) == "train"


def test_answers_questions_and_solutions_by_hand():
    p = ar.make_problem("chain", (3, 4, 5))
    assert (p.question, p.answer, p.level, p.subject) == ("What is 3 + 4 + 5?", "12", 4, "chain")
    assert p.solution == "3 + 4 = 7, so the question is 7 + 5.\n7 + 5 = 12"
    q = ar.make_problem("product", (7, 8))
    assert (q.question, q.answer, q.solution) == ("What is 7 * 8?", "56", "7 * 8 = 56")
    assert ar.make_problem("sum21", (47, 6)).answer == "53"
    assert all(x >= 10 and y <= 9 for x, y in map(_operands, ar.split_pool("sum21", "train")))


@pytest.mark.parametrize("tier", list(ar.TIERS))
def test_echoing_the_question_is_never_rewarded(tier):
    """Operands >= 1 (>= 2 in products): the last number of an echoed question is below the
    answer, so the short-answer rule cannot be satisfied by repeating the prompt."""
    scoring = ar.SCORING
    for p in ar.split_pool(tier, "train")[:200]:
        echo = p.question.removeprefix("What is ").rstrip("?")
        assert not verify(p.answer, echo, strategies=scoring).correct, p.question
        assert verify(p.answer, f"{echo} = {p.answer}", strategies=scoring).correct


@pytest.mark.parametrize("text, expected", [
    ("12", "12"), ("12.", "12"), ("7 + 5 = 12", "12"), ("The sum is 12\n13", "12"),
    ("\n\n  7+5=12 and more\n 99", "12"), ("no number here\n12", None), ("", None),
    ("1,234 is it", "1234"), ("\\boxed{9}\n12", "9"), ("-3", "-3"),
])
def test_short_answer_rule_by_hand(text, expected):
    assert extract_answer(text, strategies=ar.SCORING) == expected


def test_short_answer_rule_is_opt_in_and_linear():
    import time

    assert extract_answer("7 + 5 = 12") is None  # the default (GSM8K) rules do not read it
    t0 = time.perf_counter()
    for hostile in (" " * 1_000_000 + "1", "1 " * 500_000, "\n" * 1_000_000):
        extract_answer(hostile, strategies=ar.SCORING)
    assert time.perf_counter() - t0 < 2.0


def test_draws_are_seeded_and_errors_name_the_tier():
    a = ar.arithmetic_problems({"sum": 5, "chain": 3}, seed=1)
    assert a == ar.arithmetic_problems({"sum": 5, "chain": 3}, seed=1)
    assert a != ar.arithmetic_problems({"sum": 5, "chain": 3}, seed=2)
    assert [p.subject for p in a] == ["sum"] * 5 + ["chain"] * 3
    with pytest.raises(ValueError, match=r"counts\['sum'\]=999 exceeds the \d+ train problems"):
        ar.arithmetic_problems({"sum": 999})
    with pytest.raises(ValueError, match="unknown arithmetic tier 'division'"):
        ar.arithmetic_problems({"division": 1})


def test_teacher_hints_decompose_the_hard_tier_only_and_never_leak():
    probs = ar.arithmetic_problems({"sum": 10, "product": 10, "chain": 40}, seed=0)
    bank = reference_hints(probs, "partial_steps")
    by_id = {p.id: p for p in probs}
    recs = bank.records()
    assert {by_id[r["problem_id"]].subject for r in recs} == {"chain"} and len(recs) == 40
    for r in recs:
        p = by_id[r["problem_id"]]
        a, b, _ = _operands(p)
        assert r["hint"].startswith(f"{a} + {b} = {a + b}, so the question is ")
        assert not r["leak"] and not hint_leaks_answer(r["hint"], p.answer)


def test_cpu_presets_train_on_arithmetic_and_gpu_presets_on_gsm8k():
    fast = get_train_config("cpu-fast")
    assert (fast.task, fast.instruction, fast.hint_type) == ("arithmetic", ar.INSTRUCTION,
                                                            "partial_steps")
    assert build_scorer(fast).strategies == ar.SCORING
    assert get_train_config("colab-t4").task == get_train_config("large-gpu").task == "gsm8k"
    train, val = build_problems(fast), build_val_problems(fast)
    assert len(train) == sum(fast.difficulty_counts.values()) and len(val) == fast.n_val_problems
    assert not {p.question for p in train} & {p.question for p in val}
    assert all(ar.split_of(p.subject, _operands(p)) == "heldout" for p in val)


def test_arithmetic_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"TrainConfig\.difficulty_counts=.*arithmetic tiers"):
        get_train_config("cpu-fast", difficulty_counts={"easy": 4})
    # more problems than the tier's training split holds: refused when the config is made
    with pytest.raises(ConfigError, match=r"TrainConfig\.difficulty_counts=.*at most \d+ training "
                                          r"problems of tier 'chain'"):
        get_train_config("cpu-fast", difficulty_counts={"chain": 10_000})
    with pytest.raises(ConfigError, match=r"TrainConfig\.hint_source=.*toy tasks"):
        get_train_config("toy-fast", hint_source="reference")
    cfg = get_train_config("cpu-fast", nudging="nurl", hint_type="abstract")
    with pytest.raises(ConfigError, match="needs hint_source='self'"):
        build_hints(cfg, ["abstract"], build_problems(cfg), None, tmp_path)


def test_reference_hint_bank_is_saved_in_the_run_folder_and_reused(tmp_path):
    cfg = get_train_config("cpu-fast", nudging="nurl")
    probs = build_problems(cfg)
    bank = build_hints(cfg, ["partial_steps"], probs, None, tmp_path)
    assert (tmp_path / "hint_bank").is_dir()
    again = build_hints(cfg, ["partial_steps"], probs, None, tmp_path)
    assert again.records() == bank.records() and len(bank) == cfg.difficulty_counts["chain"]


def test_stop_ids_end_a_completion_after_its_first_token_by_hand():
    import torch

    from nudgelib.policies.base import completion_mask

    ids = torch.tensor([[5, 9, 7, 3], [9, 5, 9, 9], [5, 5, 5, 5], [5, 3, 9, 5]])
    mask, truncated = completion_mask(ids, (3,), stop_ids=(9,))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert truncated.tolist() == [False, False, True, False]
    plain, _ = completion_mask(ids, (3,))
    assert plain.tolist()[0] == [1, 1, 1, 1]


def test_cpu_preset_policy_stops_at_the_first_newline(offline_model_dir):
    import torch

    from nudgelib.training.build import build_policy

    pol = build_policy(get_train_config("cpu-fast"))
    assert pol.stop_ids and all("\n" in pol.tokenizer.decode([i]) for i in pol.stop_ids)
    s = pol.sample(["What is 2 + 2?"] * 2, group_size=8, max_new_tokens=16,
                   generator=torch.Generator().manual_seed(0))
    for row, m, text in zip(s.completion_ids.tolist(), s.completion_mask.tolist(), s.texts):
        kept = [t for t, k in zip(row, m) if k]
        assert not any(t in pol.stop_ids for t in kept[1:-1]), text  # no newline inside
        assert "\n" not in text.strip()


def test_newline_stop_set_is_kept_per_tokenizer_and_redone_for_a_changed_vocabulary(
        offline_model_dir):
    from transformers import AutoTokenizer

    from nudgelib.policies.hf import newline_token_ids

    tok = AutoTokenizer.from_pretrained(offline_model_dir)
    by_hand = tuple(i for i in range(len(tok)) if "\n" in tok.decode([i]))
    assert newline_token_ids(tok) == by_hand and len(by_hand) > 10
    again = AutoTokenizer.from_pretrained(offline_model_dir)  # a new object, the same files
    assert newline_token_ids(again) == by_hand
    again.add_tokens(["<line>\n<end>"])  # a new token with a newline: the set is decoded again
    assert newline_token_ids(again) == (*by_hand, len(again) - 1)
    assert newline_token_ids(tok) == by_hand
