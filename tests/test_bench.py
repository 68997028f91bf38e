"""The committed benchmark scripts run (tiny settings) and report what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_vs_trl_checks_settings_alternates_and_reports_ratios(offline_model_dir, real_data):
    real_data("gsm8k", "train", limit=1)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "step_vs_trl.py"), "--prompts", "2", "--group", "2",
         "--tokens", "6", "--rank", "4", "--pairs", "1", "--json", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("settings (equal on both sides)")
    order = [w for ln in lines if ln.startswith(("warm-up", "pair"))
             for w in ln.split()[:3] if w in ("nudgelib", "trl")]
    assert order == ["nudgelib", "trl", "nudgelib", "trl"]  # warm-up, then A B
    out = json.loads(lines[-1])
    assert out["step_time_ratio"] > 0 and out["peak_mem_ratio"] > 0
    s = out["settings"]
    assert (s["group_size"], s["max_new_tokens"], s["lora_rank"], s["loss_aggregation"]) == \
        (2, 6, [4], "token_mean")
    assert s["lora_targets"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                 "up_proj", "v_proj"]


def test_gpu_check_dry_run_writes_every_field_on_cpu(tmp_path, offline_model_dir):
    """bench/gpu_check.py on CPU (--dry-run: tiny random configs, 1 step per phase): the same
    code a GPU session runs, so it is known to work before a GPU exists. Both presets, the three
    phases (nudgelib GRPO, nudgelib NuRL with nudging triggered, TRL NuRL), tokens/s, memory
    fields and the fallbacks taken."""
    import time

    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"gpu_check --dry-run: {wall:.1f} s")
    r = json.loads((tmp_path / "gpu_check-dry-run.json").read_text())
    assert (tmp_path / "gpu_check-dry-run.txt").read_text().startswith("GPU check on cpu")
    assert r["dry_run"] is True and r["device"]["cuda"] is False
    assert set(r["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes", "trl"}
    assert "random" in r["weights"] and r["peak_rss_mb"] > 0
    assert [p["preset"] for p in r["presets"]] == ["colab-t4", "large-gpu"]
    for p in r["presets"]:
        assert not p["errors"] and not p["skipped"], (p["errors"], p["skipped"])
        assert "random" in p["model_built"]["weights"]
        assert [ph["phase"] for ph in p["phases"]] == ["nudgelib grpo", "nudgelib nurl",
                                                       "trl nurl"]
        grpo, nurl, trl = p["phases"]
        for ph in (grpo, nurl):
            st = ph["steps"][0]
            assert st["tokens_per_s"] > 0 and st["sample_s"] > 0 and st["update_s"] > 0
            assert "peak_gpu_gb" in ph and ph["peak_gpu_gb"] is None  # no GPU here
            assert ph["sampling"]["sampler"] == "race"
        assert grpo["steps"][0]["frac_nudged"] == 0.0
        assert nurl["steps"][0]["frac_nudged"] == 1.0 and nurl["steps"][0]["rows_resampled"] > 0
        assert trl["steps"][0]["step_s"] > 0 and trl["nudge_totals"]["zero_pass_groups"] > 0
        assert p["settings"]["skip_zero_advantage"] is False  # the update is really measured
    t4 = r["presets"][0]
    assert any("4-bit" in f for f in t4["fallbacks"])  # colab-t4 asks for 4 bits: not on CPU
