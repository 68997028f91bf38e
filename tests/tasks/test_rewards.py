import pytest

from nudgelib.tasks import rewards as R


def test_correctness_reward_trl_signature_and_shapes():
    comps = ["\\boxed{4}", [{"role": "assistant", "content": "#### 5"}], "no answer", "\\boxed{1/2}"]
    out = R.correctness_reward(prompts=["p"] * 4, completions=comps,
                               answer=["4", "5", "6", "0.5"], completion_ids=[[1]] * 4)
    assert out == [1.0, 1.0, 0.0, 1.0]
    assert R.correctness_reward.__name__ == "correctness_reward"
    custom = R.make_correctness_reward("solution_answer")
    assert custom(None, ["\\boxed{3}"], solution_answer=["3"]) == [1.0]
    with pytest.raises(KeyError, match="'answer'"):
        R.correctness_reward(None, ["\\boxed{1}"], gold=["1"])
    with pytest.raises(ValueError, match="1 entries for 2 completions"):
        R.correctness_reward(None, ["a", "b"], answer=["1"])


@pytest.mark.parametrize(
    "text, want",
    [
        ("so the answer is \\boxed{42}.", 1.0),
        ("\\boxed{42}", 1.0),
        ("\\boxed{4} no wait \\boxed{5}", 0.0),  # two boxes
        ("\\boxed{42", 0.0),  # not well formed
        ("\\boxed{}", 0.0),  # empty
        ("\\boxed{42} " + "and then a lot more working " * 5, 0.0),  # not final
        ("the answer is 42", 0.0),  # no box
    ],
)
def test_format_reward(text, want):
    assert R.format_reward(None, [text]) == [want]


def test_soft_overlong_penalty_matches_dapo_formula():
    # Lmax = 100, Lcache = 20: flat up to 80, linear to -1 at 100, -1 beyond.
    assert R.soft_overlong_penalty(50, 100, 20) == 0.0
    assert R.soft_overlong_penalty(80, 100, 20) == 0.0
    assert R.soft_overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert R.soft_overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert R.soft_overlong_penalty(101, 100, 20) == -1.0
    f = R.overlong_penalty(100, 20)
    assert f(None, ["a", "b"], completion_ids=[[0] * 85, [0] * 10]) == [pytest.approx(-0.25), 0.0]
    assert f(None, ["a"], completion_lengths=[120]) == [-1.0]
    with pytest.raises(ValueError, match="needs token lengths"):
        f(None, ["a"])
    with pytest.raises(ValueError, match="cache_len=0"):
        R.overlong_penalty(100, 0)


def test_overlong_with_tokenizer():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    f = R.overlong_penalty(10, 4, tokenizer=Tok())
    assert f(None, ["w " * 8]) == [pytest.approx(-0.5)]


def test_weighted_reward():
    f = R.weighted_reward([(R.correctness_reward, 1.0), (R.format_reward, 0.1)], name="total")
    out = f(None, ["\\boxed{4}", "the answer is 4", "\\boxed{5}"], answer=["4", "4", "4"])
    assert out == [pytest.approx(1.1), pytest.approx(1.0), pytest.approx(0.1)]
    assert f.__name__ == "total"
    with pytest.raises(TypeError, match=r"components\[0\]"):
        R.weighted_reward([(R.format_reward,)])
    with pytest.raises(ValueError, match="at least one"):
        R.weighted_reward([])


def test_reward_table():
    df = R.reward_table(["\\boxed{4}", "nope"], ["4", "4"],
                        {"correct": R.correctness_reward, "format": R.format_reward})
    assert list(df["correct"]) == [1.0, 0.0] and list(df["format"]) == [1.0, 0.0]
