"""The compute ledger in a run's metrics: every step books its sampling calls, the tokens it
sampled (plain, hinted, sampled again) and the tokens it trained on, checked against the
batch the step trained on."""

import pytest

from nudgelib.hints.bank import HintBank
from nudgelib.toy import toy_hint
from nudgelib.training.build import build_problems
from nudgelib.training.config import get_train_config
from nudgelib.training.trainer import Trainer, resume_or_start


def _cfg(**kw):
    return get_train_config("toy-table", **{"save_every": 0, "val_every": 0, **kw})


@pytest.mark.parametrize("nudging,epochs", [("none", 1), ("nurl", 2), ("dynamic", 1), ("prefix", 1)])
def test_each_step_books_what_it_sampled_and_trained(nudging, epochs):
    cfg = _cfg(nudging=nudging, stage1="none", ppo_epochs=epochs)
    seen = []
    tr = Trainer(cfg, None, progress=False,
                 callbacks=[lambda t, row, batch: seen.append((row, batch, batch.advantages.clone()))])
    tr.train(until_step=3)
    for row, batch, adv in seen:
        lengths = batch.completion_mask.sum(-1).long()
        # every row sampled after the first draw (NuRL's hinted rows, dynamic sampling's
        # redraws) is booked as hinted or resampled, and hinted rows are the batch's hinted rows
        assert row["cost_rows_hinted"] + row["cost_rows_resampled"] == row["rows_resampled"] \
            or nudging == "prefix"
        assert row["cost_rows_hinted"] == int(batch.hinted.sum())
        # first draw: G rows per prompt (prefix hints: hinted from the first draw on)
        assert row["cost_rows_plain"] + (row["cost_rows_hinted"] if nudging == "prefix" else 0) \
            == cfg.prompts_per_step * cfg.group_size
        # trained: the completion tokens of the rows with a non-zero advantage, once per epoch
        trained = int(lengths[adv != 0].sum()) * epochs
        assert row["cost_tokens_trained"] == trained
        assert row["cost_model_calls"] >= 1
        assert row["cost_tokens_plain"] >= row["cost_rows_plain"]  # at least one token a row
        if nudging == "prefix":  # start 0.5 of the 9-step elimination: every prompt prefixed
            assert row["cost_rows_hinted"] == len(batch) and all(h.startswith("not ") for h in batch.hints)
    if nudging == "dynamic":
        assert sum(r["cost_rows_resampled"] for r, _, _ in seen) == tr.nudger.totals["resampled_rows"] > 0
    if nudging == "none":
        assert all(r["cost_rows_hinted"] == r["cost_rows_resampled"] == 0 for r, _, _ in seen)


def test_writing_the_hints_is_booked_once_in_the_first_step_that_uses_them(tmp_path):
    """A bank that says what writing it cost (here 7 calls and 1,234 tokens, as if a teacher
    wrote it) is booked in its run's first step only: not again after a resume, and at a
    fork's first step (the source's rows booked nothing)."""
    problems = build_problems(_cfg())
    bank = HintBank.from_records([{"problem_id": p.id, "hint_type": "abstract",
                                   "hint": toy_hint(p, "abstract")} for p in problems],
                                 {"hint_type": "abstract", "model_calls": 7, "tokens": 1234})
    bank.save(tmp_path / "bank")
    cfg = _cfg(nudging="nurl", stage1="none", hint_bank=str(tmp_path / "bank"), save_every=1)

    def booked(trainer):
        return [(r["cost_hint_writing_calls"], r["cost_tokens_hint_writing"]) for r in trainer.rows]

    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train(until_step=2)
    tr.close()
    assert booked(tr) == [(7, 1234), (0, 0)]
    again = resume_or_start(cfg, tmp_path / "run", progress=False)
    again.train(until_step=3)
    again.close()
    assert booked(again) == [(7, 1234), (0, 0), (0, 0)]
    grpo = Trainer(_cfg(save_every=1), tmp_path / "grpo", progress=False)
    grpo.train(until_step=2)
    grpo.close()
    fork = Trainer(cfg, tmp_path / "fork", progress=False, warm=False)
    fork.fork_from(grpo.checkpoint_dir(2))
    fork.train(until_step=3)
    fork.close()
    assert booked(fork) == [(0, 0), (0, 0), (7, 1234)]
