"""Rollout batches: grouping, scoring, records, and re-padding when rows are replaced."""

import pytest
import torch

from nudgelib.rollouts import collect_rollouts, prompt_text, sample_rows
from nudgelib.tasks.problems import Problem
from nudgelib.tasks.rewards import ExactMatchScorer, MathScorer
from nudgelib.toy import CategoricalPolicy, ToyPolicy, ToyTask, toy_problems

TASK = ToyTask.make({"easy": 4, "hard": 4})


@pytest.fixture()
def table():
    return CategoricalPolicy(ToyPolicy(TASK, max_len=6)), toy_problems(TASK)


def test_prompt_text_places_the_hint_after_the_question():
    assert prompt_text("What is 2+2?") == "What is 2+2?"
    assert prompt_text("What is 2+2?", "add") == "What is 2+2?\n\nHint: add"


def test_collect_rollouts_groups_and_scores(table):
    pol, probs = table
    b = collect_rollouts(pol, probs, ExactMatchScorer(), group_size=5, max_new_tokens=6,
                         generator=torch.Generator().manual_seed(0), prompts_per_call=3)
    assert len(b) == 40 and b.n_groups == 8
    assert b.group.tolist() == [g for g in range(8) for _ in range(5)]
    assert b.group_sizes().tolist() == [5] * 8
    for i in range(len(b)):
        p = probs[int(b.group[i])]
        assert b.prompts[i] == p.question
        assert bool(b.correct[i]) == (b.texts[i] == p.answer)
        assert float(b.rewards[i]) == float(b.correct[i])
    counts = b.group_pass_counts()
    assert counts.tolist() == [float(b.correct[b.group == g].sum()) for g in range(8)]
    zero = sum(float(b.rewards[b.group == g].std(unbiased=False)) == 0 for g in range(8)) / 8
    assert b.frac_zero_std() == pytest.approx(zero)
    df = b.to_frame()
    assert len(df) == 40 and {"problem_id", "hinted", "reward", "length", "truncated",
                              "completion"} <= set(df.columns)
    assert (df["length"] == b.completion_mask.sum(-1).numpy()).all()


def test_replace_rows_repads_and_keeps_other_rows(table):
    pol, probs = table
    gen = torch.Generator().manual_seed(1)
    b = collect_rollouts(pol, probs[:2], ExactMatchScorer(), group_size=3, max_new_tokens=6,
                         generator=gen)
    before = [(b.prompt_ids[i][b.prompt_mask[i] > 0].tolist(),
               b.completion_ids[i][b.completion_mask[i] > 0].tolist()) for i in range(6)]
    # a wider prompt: fake it with a policy-independent batch of two rows
    new = sample_rows(pol, [probs[0], probs[0]], [0, 0], [None, None], ExactMatchScorer(),
                      max_new_tokens=6, generator=gen, all_problems=probs[:2])
    new.prompt_ids = torch.cat([torch.zeros(2, 3, dtype=torch.long), new.prompt_ids], 1)
    new.prompt_mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), new.prompt_mask], 1)
    new.hints = ["h1", "h2"]
    b.advantages = torch.ones(6)
    b.replace_rows([1, 2], new)
    assert b.prompt_ids.shape[1] == 4 and b.advantages is None
    assert b.hinted.tolist() == [False, True, True, False, False, False]
    for i in (0, 3, 4, 5):
        assert (b.prompt_ids[i][b.prompt_mask[i] > 0].tolist(),
                b.completion_ids[i][b.completion_mask[i] > 0].tolist()) == before[i]
    assert b.group.tolist() == [0, 0, 0, 1, 1, 1]
    one = sample_rows(pol, [probs[0]], [0], [None], ExactMatchScorer(), max_new_tokens=6,
                      generator=gen, all_problems=probs[:2])
    with pytest.raises(ValueError, match="2 rows but 1 replacements"):
        b.replace_rows([0, 1], one)


def test_math_scorer_components():
    probs = [Problem(id="a", question="q", answer="12")] * 4
    comps = ["so the answer is \\boxed{12}", "the answer is 12", "\\boxed{13}", "\\boxed{12}"]
    lengths, truncated = [10, 30, 10, 40], [False, False, False, True]
    plain = MathScorer()
    r, c = plain(probs, comps, lengths, truncated)
    assert c == [True, True, False, True] and r == [1.0, 1.0, 0.0, 1.0]
    shaped = MathScorer(format_weight=0.1, overlong_weight=1.0, max_len=40, cache_len=20)
    r, c = shaped(probs, comps, lengths, truncated)
    # lengths <= 20 no penalty; 30 -> (40-20-30)/20 = -0.5; truncated -> -1
    assert r == pytest.approx([1.1, 1.0 - 0.5, 0.1, 1.1 - 1.0])


def test_length_buckets_cover_every_row_once_and_minimise_padded_work():
    import itertools

    from nudgelib.rollouts import length_buckets

    lengths = [64] * 12 + [50, 40, 30, 20, 10, 8, 6, 5] + [64] * 12
    keys = [i // 8 for i in range(32)]  # 4 prompts x 8 rows
    buckets = length_buckets(lengths, keys, [65] * 32, max_rows=32)
    assert sorted(i for b in buckets for i in b) == list(range(32))
    assert [(len(b), max(lengths[i] for i in b)) for b in buckets] == [(28, 64), (4, 10)]
    assert all(len(b) <= 3 for b in length_buckets(lengths, keys, [65] * 32, max_rows=3))

    def cost(bucket, call=32):  # the documented cost model
        prompts = {keys[i] for i in bucket}
        return len(bucket) * max(lengths[i] for i in bucket) + 65 * len(prompts) + call

    # brute force over every cut of the length-sorted rows (12 rows: 2^11 ways)
    sub = [0, 3, 9, 12, 13, 14, 15, 16, 17, 18, 19, 25]
    order = sorted(sub, key=lambda i: (-lengths[i], i))
    best = min(sum(cost(order[a:b]) for a, b in zip((0, *cuts), (*cuts, len(order))))
               for k in range(len(order)) for cuts in itertools.combinations(range(1, 12), k))
    got = length_buckets([lengths[i] for i in sub], [keys[i] for i in sub], [65] * 12, 12)
    assert sum(cost([sub[i] for i in b]) for b in got) == best


def test_hint_reliance_is_the_mean_per_token_log_ratio_by_hand():
    """hint_reliance = mean over a completion's tokens of log pi(y|q,h) - log pi(y|q). On the
    table toy only the answer token depends on the hint, through the learned table U: the
    expected value is that token's log-ratio, from the policy's own logits, over the length."""
    from nudgelib.rollouts import hint_reliance, nudge_metrics
    from nudgelib.toy import hint_vocab_size, toy_hint_tokens, toy_table_hint

    task = ToyTask.make({"easy": 2, "hard": 2}, seed=0)
    net = ToyPolicy(task, max_len=3)
    with torch.no_grad():
        net.U.normal_(generator=torch.Generator().manual_seed(0))
    pol = CategoricalPolicy(net)
    probs = toy_problems(task)
    hints = [toy_table_hint(p, "abstract") for p in probs]
    batch = collect_rollouts(pol, probs, ExactMatchScorer(), group_size=4, max_new_tokens=3,
                             generator=torch.Generator().manual_seed(1), hints=hints)
    rows = list(range(len(batch)))
    got = hint_reliance(pol, batch, rows)
    K = task.n_answers
    for r in rows:
        g = int(batch.group[r])
        p = torch.tensor([int(probs[g].question[1:])])
        hv = torch.zeros(1, hint_vocab_size(K))
        hv[0, toy_hint_tokens(hints[g], K)] = 1
        a = int(batch.completion_ids[r, 0])
        with torch.no_grad():
            ratio = (torch.log_softmax(net.answer_logits(p, hv), -1)[0, a]
                     - torch.log_softmax(net.answer_logits(p), -1)[0, a])
        n = int(batch.completion_mask[r].sum())
        assert float(got[r]) == pytest.approx(float(ratio) / n, abs=1e-5), r
    assert got.abs().max() > 0.05  # the hints do move the answer's probability
    m = nudge_metrics(pol, batch)
    ok = (batch.hinted & batch.correct).nonzero().flatten()
    assert m["hinted_successes"] == len(ok)
    assert m["hint_reliance"] == pytest.approx(float(got[ok].mean()) if len(ok) else None)
    assert hint_reliance(pol, batch, []).numel() == 0


def test_answer_shapes_by_hand():
    from nudgelib.tasks.arithmetic import answer_shape, answer_shape_shares

    cases = {"17": "number", " 17.\nmore": "number", "9 + 8 = 17": "one_step",
             "3 * 4 = 12": "one_step", "3 + 6 + 8 = 17": "several_steps",
             "3 + 6 = 9, 9 + 8 = 17": "several_steps", "The answer is 17": "other",
             "= 1": "other", "": "other", "  \n\n5": "number"}
    for text, shape in cases.items():
        assert answer_shape(text) == shape, text
    shares = answer_shape_shares(["17", "9 + 8 = 17", "9 + 8 = 17", "x"])
    assert shares == {"format_number": 0.25, "format_one_step": 0.5,
                      "format_several_steps": 0.0, "format_other": 0.25}
    assert answer_shape_shares([]) == {}
    assert answer_shape("1 + " * 100_000) == "other"  # bounded: only 200 characters are read
