"""Run folders under faults: each failure a fault-injection review found, reproduced, and what
the run does now (nothing lost, the message names the file and the fix). The table toy keeps
every case to seconds."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nudgelib.training.cli import main
from nudgelib.training.config import get_train_config
from nudgelib.training.runs import (
    LOCK,
    MARKER,
    RunFolderError,
    RunLock,
    claim_run_folder,
    complete_checkpoints,
)
from nudgelib.training.trainer import METRICS_FILE, Trainer


def _cfg(**kw):
    return get_train_config("toy-table", **{"save_every": 1, "keep_checkpoints": 0, **kw})


def _rows(run):
    return [json.loads(x) for x in (run / METRICS_FILE).read_text().splitlines()]


def test_another_trainers_folder_is_refused_and_left_untouched(tmp_path):
    """Hugging Face's Trainer writes checkpoint-*/trainer_state.json and config.json: that is
    not an older nudgelib run, and its config.json is the user's."""
    hf = tmp_path / "hf-run"
    (hf / "checkpoint-500").mkdir(parents=True)
    (hf / "checkpoint-500" / "trainer_state.json").write_text('{"global_step": 500}')
    (hf / "config.json").write_text('{"model_type": "llama"}')
    before = {p: p.read_bytes() for p in hf.rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError, match="not a nudgelib run folder"):
        Trainer(_cfg(), hf, progress=False)
    assert {p: p.read_bytes() for p in hf.rglob("*") if p.is_file()} == before
    assert not (hf / MARKER).exists() and not (hf / LOCK).exists()


def test_a_marker_write_cut_short_leaves_a_folder_a_new_run_can_use(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / f".tmp-{MARKER}").write_text('{"nudgelib_run": 1, "crea')  # killed mid-write
    tr = Trainer(_cfg(), run, progress=False)
    tr.train(until_step=1)
    tr.close()
    assert (run / MARKER).is_file() and not (run / f".tmp-{MARKER}").exists()


def test_a_callback_that_raises_after_the_step_loses_no_row(tmp_path):
    """Ctrl-C inside the dashboard's callback, after the step advanced: the row is stored, and
    re-running the cell continues with no gap."""
    run = tmp_path / "run"
    calls = {"n": 0}

    def interrupt_at_step_2(trainer, row, batch):
        calls["n"] += 1
        row["seen_by_callback"] = True
        if trainer.step == 2 and calls["n"] == 2:
            raise KeyboardInterrupt

    tr = Trainer(_cfg(), run, callbacks=[interrupt_at_step_2], progress=False)
    with pytest.raises(KeyboardInterrupt):
        tr.train(until_step=4)
    assert [r["step"] for r in _rows(run)] == [1, 2] and _rows(run)[1]["seen_by_callback"]
    tr.train(until_step=4)  # the cell again
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]
    tr.close()


def test_forking_from_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, capsys):
    src = tmp_path / "grpo"
    tr = Trainer(_cfg(), src, progress=False)
    tr.train(until_step=2)
    tr.close()
    ckpt = complete_checkpoints(src)[-1]
    target = ckpt / "trainer_state.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: loads fine, silently wrong
    target.write_bytes(bytes(data))
    out = tmp_path / "nurl"
    rc = main(["--config", "toy-table", "--nudging", "nurl", "--steps", "3", "--out", str(out),
               "--quiet", "--fork-from", str(ckpt)])
    err = capsys.readouterr().err
    assert rc == 2 and "damaged" in err and "trainer_state.pt" in err, err
    assert "Traceback" not in err
    assert not (out / METRICS_FILE).exists()


def test_a_folder_deleted_while_the_run_writes_is_not_recreated(tmp_path):
    run = tmp_path / "run"

    def delete_folder(trainer, row, batch):
        if trainer.step == 2:
            shutil.rmtree(run)

    tr = Trainer(_cfg(), run, callbacks=[delete_folder], progress=False)
    with pytest.raises(RunFolderError, match="vanished"):
        tr.train(until_step=4)
    assert not run.exists(), "no folder without marker or lock was made"
    tr.close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method and flock: Linux")
def test_a_stale_lock_and_simultaneous_starts_give_one_holder_in_100_rounds(tmp_path):
    """A stale lock (its process killed) and six starts at the same moment, 100 times: exactly
    one holds the lock each round, and it reports the stale one it replaced (the older
    read-unlink-create takeover let two or three hold it in some rounds). The rounds run in a
    small process of their own (tests/training/lock_race.py), whose forks are cheap."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "tests.training.lock_race", str(tmp_path), "100"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rounds"] == 100 and len(list(tmp_path.glob("r*"))) == 100
    assert not out["doubles"], f"{len(out['doubles'])} of 100 rounds: {out['doubles'][:3]}"


def test_a_killed_holder_leaves_a_lock_the_next_run_replaces_and_reports(tmp_path):
    run = tmp_path / "run"
    claim_run_folder(run, _cfg().to_dict(), [])
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from nudgelib.training.runs import RunLock; "
        f"RunLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderError, match=f"in use by pid {holder.pid}"):
        RunLock(run).acquire()
    holder.send_signal(signal.SIGTERM)  # no atexit runs: the lock file stays behind
    holder.wait()
    assert (run / LOCK).exists()
    lock = RunLock(run).acquire()
    assert lock.replaced["pid"] == holder.pid
    lock.release()
    assert not (run / LOCK).exists()


@pytest.mark.parametrize("changes,field", [
    ({"seed": 2 ** 64}, "seed"),
    ({"hint_bank": 5}, "hint_bank"),
    ({"group_size": 10 ** 6}, "group_size"),
    ({"char_d_model": 66, "char_heads": 4}, "char_d_model"),
])
def test_config_values_the_run_cannot_use_are_refused_by_name(changes, field):
    from nudgelib.training.config import ConfigError

    base = "toy-fast" if field == "char_d_model" else "toy-table"
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}="):
        get_train_config(base, **changes)


def test_arithmetic_tiers_and_counts_are_checked_before_anything_is_written(tmp_path):
    from nudgelib.training.config import ConfigError

    with pytest.raises(ConfigError, match="over the arithmetic tiers"):
        get_train_config("cpu-fast", difficulty_counts={"cube": 4})
    with pytest.raises(ConfigError, match=r"at most \d+ training problems of tier 'sum'"):
        get_train_config("cpu-fast", difficulty_counts={"sum": 10 ** 5})
    out = tmp_path / "run"
    rc = main(["--config", "cpu-fast", "--steps", "1", "--out", str(out), "--quiet",
               "--set", 'difficulty_counts={"sum": 100000}'])
    assert rc == 2 and not out.exists()


def test_ctrl_c_on_the_cli_says_where_it_stopped_and_how_to_continue(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nudgelib.training", "--config", "toy-table", "--steps", "100000",
           "--out", str(out), "--save-every", "3", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not complete_checkpoints(out):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err, err
    resume = err.split("Continue with: ", 1)[1].strip()
    assert resume.startswith("python -m nudgelib.training ") and resume.endswith("--resume")
    stopped = len(_rows(out))
    assert [r["step"] for r in _rows(out)] == list(range(1, stopped + 1)), "no row lost"
    args = resume.split()[3:]
    args[args.index("100000")] = str(stopped + 2)
    assert main(args) == 0
    assert [r["step"] for r in _rows(out)] == list(range(1, stopped + 3))


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume_keeping_its_rows(
        tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(_cfg(), run, progress=False)._write_metrics({"step": 1})
    cli = ["--config", "toy-table", "--steps", "2", "--out", str(run), "--quiet"]
    assert main(cli) == 2 and "pass --resume" in capsys.readouterr().err
    assert main([*cli, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "starting again from step 0" in said
    kept = list(run.glob(f"{METRICS_FILE}.before-restart-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"step": 1}\n' and kept[0].name in said
    assert [r["step"] for r in _rows(run)] == [1, 2]


@pytest.mark.parametrize("make", ["empty", "garbage", "foreign"])
def test_a_damaged_or_foreign_hint_bank_is_named(tmp_path, capsys, make):
    from nudgelib.hints.bank import HintBank, HintBankError

    bank = tmp_path / "bank"
    bank.mkdir()
    if make == "garbage":
        (bank / "dataset_info.json").write_text("{not json")
        (bank / "state.json").write_bytes(b"\x00\xff" * 50)
    elif make == "foreign":
        from datasets import Dataset

        Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(bank))
    with pytest.raises(HintBankError, match=rf"hint bank {bank}"):
        HintBank.load(bank)
    out = tmp_path / "run"
    rc = main(["--config", "toy-table", "--nudging", "nurl", "--steps", "1", "--out", str(out),
               "--quiet", "--hint-bank", str(bank)])
    err = capsys.readouterr().err
    assert rc == 2 and f"hint bank {bank}" in err and "Traceback" not in err, err


def test_the_hints_cli_turns_data_errors_into_a_message(tmp_path, capsys, monkeypatch):
    from nudgelib.hints.__main__ import main as hints_main

    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path))  # an empty data folder
    rc = hints_main(["--model", "offline:smollm2-135m-instruct", "--types", "answer",
                     "--out", str(tmp_path / "bank")])
    err = capsys.readouterr().err
    assert rc == 2 and "gsm8k" in err and "Traceback" not in err, err
    assert not (tmp_path / "bank").exists()


def test_the_cli_reports_the_stale_lock_it_replaces(tmp_path, capsys):
    from nudgelib.training.build import build_problems

    run = tmp_path / "run"
    claim_run_folder(run, _cfg().to_dict(), build_problems(_cfg()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                        "since": "earlier", "token": "old"}))
    rc = main(["--config", "toy-table", "--steps", "1", "--out", str(run), "--quiet"])
    assert rc == 0 and f"replaced the lock of pid {dead.pid}" in capsys.readouterr().err
