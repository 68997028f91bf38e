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
