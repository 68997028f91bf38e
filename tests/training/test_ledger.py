"""The compute ledger in a run's metrics: every step books its sampling calls, the tokens it
sampled (plain, hinted, sampled again) and the tokens it trained on, checked against the
batch the step trained on."""

import pytest

from nudgelib.training.config import get_train_config
from nudgelib.training.trainer import Trainer


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
