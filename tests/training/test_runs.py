"""Run folders (nudgelib.training.runs): foreign folders refused before anything is written, one writer
per run, checkpoints verified by their manifest and skipped when damaged, resume / fork
semantics of the CLI, metrics rows and hint banks that are never silently lost."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nudgelib.training.cli import main
from nudgelib.training.config import get_train_config
from nudgelib.training.runs import LOCK, MARKER, RunFolderError, RunLock, verify_folder
from nudgelib.training.trainer import Trainer, complete_checkpoints, resume_or_start

SMALL = dict(warm_start_steps=30, prompts_per_step=4, group_size=4)


def _cfg(**kw):
    return get_train_config("toy-fast", **{**SMALL, **kw})


def _cli(out, *extra, steps=3):
    return ["--config", "toy-fast", "--steps", str(steps), "--out", str(out), "--seed", "3",
            "--quiet", "--set", "warm_start_steps=30", "--set", "group_size=4",
            "--set", "prompts_per_step=4", *extra]


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(tmp_path):
    user = tmp_path / "mine"
    (user / "adapter").mkdir(parents=True)
    (user / "config.json").write_text('{"my": "settings"}')
    (user / "adapter" / "adapter_model.safetensors").write_bytes(b"my weights" * 100)
    return user


def test_a_folder_that_is_not_a_run_is_refused_before_anything_is_written(tmp_path, capsys):
    user = _user_folder(tmp_path)
    before = _snapshot(user)
    with pytest.raises(RunFolderError, match=r"not empty and is not a nudgelib run folder"):
        Trainer(_cfg(), user, progress=False)
    assert main(_cli(user)) == 2
    assert "is not a nudgelib run folder" in capsys.readouterr().err
    assert main(_cli(user, "--resume")) == 2
    assert _snapshot(user) == before, "nothing of the user's was changed or added"


def test_resume_with_nothing_to_resume_says_so_and_changes_nothing(tmp_path, capsys):
    assert main(_cli(tmp_path / "new", "--resume")) == 2
    assert "no complete checkpoint to resume" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # a run killed before its first checkpoint, resumed with other problems: refused, its rows kept
    run = tmp_path / "run"
    Trainer(_cfg(), run, progress=False)._write_metrics({"step": 1})
    assert main(_cli(run, "--resume")) == 2
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'
    # resume_or_start (the notebooks) starts again, and says what it discards
    with pytest.warns(UserWarning, match=r"no complete checkpoint; starting again from step 0 "
                                         r"\(the 1 metric rows"):
        assert resume_or_start(_cfg(), run, progress=False).step == 0


def test_resume_with_fork_from_on_a_new_folder_forks(tmp_path, capsys):
    src = tmp_path / "grpo"
    assert main(_cli(src, "--set", "save_every=1", steps=2)) == 0
    ckpt = complete_checkpoints(src)[0]
    out = tmp_path / "nurl"
    assert main(_cli(out, "--resume", "--fork-from", str(ckpt), steps=3)) == 0
    fork = json.loads((out / "fork.json").read_text())
    assert fork["forked_from"] == str(ckpt) and fork["step"] == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0].get("forked_from") == str(ckpt)
    # resumed later with another --fork-from: refused, not ignored
    assert main(_cli(out, "--resume", "--fork-from", str(complete_checkpoints(src)[1]),
                     steps=4)) == 2
    assert "continues a run forked from" in capsys.readouterr().err


def test_one_writer_per_run_folder(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(_cfg(), run, progress=False)
    holder = json.loads((run / LOCK).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    # another process holding it: refused, naming the holder
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from nudgelib.training.runs import RunLock; "
        f"RunLock(Path({str(tmp_path / 'b')!r})).acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        (tmp_path / "b").mkdir()
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=rf"in use by pid {other.pid} on "
                                                 rf"{socket.gethostname()}"):
            RunLock(tmp_path / "b").acquire()
    finally:
        other.kill()
        other.wait()
    # that process is gone: its lock is stale, reported and replaced
    lock = RunLock(tmp_path / "b").acquire()
    assert lock.replaced["pid"] == other.pid
    lock.release()
    assert not (tmp_path / "b" / LOCK).exists()
    # this process again (a notebook re-running its cell): taken over, and the old Trainer's
    # release no longer removes the new one's lock
    again = Trainer(_cfg(), run, progress=False)
    tr.close()
    assert (run / LOCK).exists()
    again.close()
    assert not (run / LOCK).exists()


def test_two_cli_runs_on_one_folder_exactly_one_runs(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nudgelib.training", *_cli(run, steps=400)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        metrics = run / "metrics.jsonl"  # the first run is training: it holds the lock
        while not metrics.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert (run / LOCK).exists(), first.stderr.read() if first.poll() is not None else ""
        t0 = time.time()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        took = time.time() - t0
        assert first.poll() is None, "the first run is still running"
        assert second.returncode == 2, second.stderr
        assert f"in use by pid {first.pid}" in second.stderr and took < 10, (took, second.stderr)
        time.sleep(1)  # the first keeps training
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if x.strip().endswith("}")]
    assert steps == list(range(1, len(steps) + 1)), "one writer: no step is written twice"


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    for i in range(start, min(len(data), start + 4096)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,where", [(_damage_truncate, "trainer_state.pt"),
                                          (_damage_flip, "policy")])
def test_a_damaged_newest_checkpoint_is_named_skipped_and_the_run_ends_identical(
        tmp_path, damage, where):
    cfg = _cfg(save_every=1, keep_checkpoints=0)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    ref = full.train(until_step=5)
    full.close()
    run = tmp_path / "run"
    tr = Trainer(cfg, run, progress=False)
    tr.train(until_step=3)
    tr.close()
    newest = complete_checkpoints(run)[-1]
    target = newest / where
    if target.is_dir():
        target = max((p for p in target.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    damage(target)
    assert verify_folder(newest) and str(target) in verify_folder(newest)
    with pytest.warns(UserWarning, match=rf"checkpoint step-000003 is damaged: .*{target.name}.*"
                                         rf"resuming from step-000002 instead"):
        again = resume_or_start(cfg, run, progress=False)
    assert again.step == 2
    df = again.train(until_step=5)
    for key in ("reward_mean", "pass_rate", "frac_zero_std"):
        assert df[key].tolist() == ref[key].tolist(), key


def test_old_checkpoints_are_retired_so_a_kill_cannot_leave_a_false_complete_one(
        tmp_path, monkeypatch):
    import nudgelib.training.runs as runs

    cfg = _cfg(save_every=1, keep_checkpoints=1)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train(until_step=1)

    real_rmtree = runs.shutil.rmtree

    def killed_rmtree(path, ignore_errors=False):  # the kill lands inside that deletion
        if str(path).endswith("step-000001"):
            raise KeyboardInterrupt
        return real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(runs.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        tr.train(until_step=2)
    monkeypatch.undo()
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "step-000001" in left, "the kill left the old folder's files"
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000002"]
    tr.train(until_step=3)  # the next prune cleans what the kill left
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000003"]


def test_a_damaged_metrics_row_is_reported_not_dropped_silently(tmp_path):
    cfg = _cfg(save_every=1, keep_checkpoints=0)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train(until_step=3)
    tr.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    damaged = "\n".join(lines) + "\n"
    (tmp_path / "metrics.jsonl").write_text(damaged)
    with pytest.warns(UserWarning, match=r"1 unreadable line\(s\).*checkpoint's rows are kept.*set "
                                         r"aside as metrics.jsonl.damaged-"):
        again = resume_or_start(cfg, tmp_path, progress=False)
    # the checkpoint holds the rows (checksummed): the history is whole again, and the damaged
    # file is kept beside it, not overwritten
    assert [r["step"] for r in again.rows] == [1, 2, 3]
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    (aside,) = tmp_path.glob("metrics.jsonl.damaged-*")
    assert aside.read_text() == damaged


def test_a_resume_with_other_problems_under_the_same_ids_is_refused(tmp_path):
    cfg = _cfg(save_every=1)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train(until_step=1)
    tr.close()
    marker = json.loads((tmp_path / MARKER).read_text())
    from nudgelib.training.build import build_problems

    changed = build_problems(cfg)
    changed[2] = type(changed[2])(**{**changed[2].__dict__, "answer": "999"})
    with pytest.raises(RunFolderError, match=rf"problem '{changed[2].id}' has another question "
                                             r"or answer now"):
        Trainer(cfg, tmp_path, problems=changed, progress=False)
    assert json.loads((tmp_path / MARKER).read_text()) == marker


def test_an_out_that_cannot_be_written_fails_before_any_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.time()
    assert main(_cli(blocker / "run")) == 2
    err = capsys.readouterr().err
    assert "cannot write the run folder" in err and time.time() - t0 < 10, err


def test_a_half_written_hint_bank_is_made_again(tmp_path):
    """Teacher hints of arithmetic chain problems (no model needed), saved with a manifest; a
    truncated shard is named and the bank rebuilt instead of blocking the resume."""
    from nudgelib.tasks.arithmetic import arithmetic_problems
    from nudgelib.training.build import build_hints

    problems = arithmetic_problems({"chain": 4})
    cfg = get_train_config("cpu-fast", nudging="nurl", hint_source="reference")
    bank = build_hints(cfg, ["partial_steps"], problems, None, tmp_path)
    saved = tmp_path / "hint_bank"
    assert verify_folder(saved) is None
    arrow = next(saved.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:50])
    with pytest.warns(UserWarning, match=r"hint_bank.*(bytes|checksum).*the hints are made again"):
        again = build_hints(cfg, ["partial_steps"], problems, None, tmp_path)
    assert again.records() == bank.records() and verify_folder(saved) is None


def test_a_bank_for_other_problems_is_reported_and_missing_hints_are_logged(tmp_path):
    """Issue 22: NuRL with hints for other problems used to nudge nothing, silently."""
    from nudgelib.hints.bank import HintBank

    bank = tmp_path / "bank"
    HintBank.from_records([{"problem_id": "elsewhere", "hint_type": "partial_steps",
                            "hint": "not 1 2 3"}]).save(bank)
    cfg = get_train_config("toy-table", nudging="nurl", hint_type="partial_steps", seed=1,
                           hint_bank=str(bank))
    with pytest.warns(UserWarning, match=r"none of the 24 training problems has a "
                                         r"partial_steps hint: nurl can nudge no group"):
        tr = Trainer(cfg, progress=False)
    df = tr.train(until_step=3)
    assert df["missing_hints"].sum() > 0 and df["frac_nudged"].max() == 0


def test_a_loaded_bank_is_checked_for_leaks_again(tmp_path):
    """A hand-edited row that gives the answer but says leak=False is flagged and not served."""
    from nudgelib.hints.bank import HintBank
    from nudgelib.tasks.arithmetic import arithmetic_problems
    from nudgelib.training.build import build_hints

    problems = arithmetic_problems({"chain": 2})
    p = problems[0]
    bank = tmp_path / "bank"
    HintBank.from_records([
        {"problem_id": p.id, "hint_type": "partial_steps", "hint": f"The answer is {p.answer}.",
         "leak": False},
        {"problem_id": problems[1].id, "hint_type": "partial_steps", "hint": "Add them up."}],
    ).save(bank)
    cfg = get_train_config("cpu-fast", nudging="nurl", hint_bank=str(bank))
    with pytest.warns(UserWarning, match=r"1 hint\(s\) leak their problem's gold answer"):
        loaded = build_hints(cfg, ["partial_steps"], problems, None, None)
    assert loaded.lookup(p.id, "partial_steps") is None
    assert loaded.lookup(problems[1].id, "partial_steps") == "Add them up."
    assert loaded.to_pandas()["leak"].tolist() == [True, False]


def test_a_full_disk_is_named_before_training_and_at_a_save(tmp_path, monkeypatch):
    """A disk that cannot hold the checkpoints is refused when the Trainer is built; a disk
    that fills up during a save says "no space left" (torch.save itself only says
    "unexpected pos"). The device is simulated by disk_usage (on a real 512 KB tmpfs the first
    message was measured by hand: "about 6.8 MB needed, 0.5 MB free")."""
    import collections

    import torch

    import nudgelib.training.runs as runs

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 5000, 5000))
    with pytest.raises(RunFolderError, match=r"not enough space for checkpoints in .*: about "
                                             r"[\d.]+ MB needed, 0.0 MB free"):
        Trainer(_cfg(), tmp_path / "a", progress=False)
    monkeypatch.undo()
    tr = Trainer(_cfg(), tmp_path / "b", progress=False)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))

    def full(*a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunFolderError, match=r"cannot save the checkpoint of step 0 in .*: no "
                                             r"space left on the device \(100 bytes free\)"):
        tr.save_checkpoint()
    monkeypatch.undo()
    assert complete_checkpoints(tmp_path / "b") == [], "nothing half-written looks complete"


def test_export_adapter_never_replaces_a_folder_it_did_not_write(tmp_path):
    user = _user_folder(tmp_path)
    before = _snapshot(user)
    tr = Trainer(_cfg(), progress=False)
    with pytest.raises(RunFolderError, match="is not an adapter nudgelib exported"):
        tr.export_adapter(user)
    assert _snapshot(user) == before
    out = tr.export_adapter(tmp_path / "adapter")
    assert tr.export_adapter(out) == out  # its own export is replaced
