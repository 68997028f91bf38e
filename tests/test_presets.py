import pytest

from nudgelib import presets


def test_fast_switch_parsing(monkeypatch):
    for raw, want in [("1", True), ("true", True), ("ON", True), ("0", False), ("", False),
                      ("no", False)]:
        monkeypatch.setenv("NUDGE_FAST", raw)
        assert presets.is_fast() is want
    monkeypatch.delenv("NUDGE_FAST")
    assert presets.is_fast() is False
    monkeypatch.setenv("NUDGE_FAST", "maybe")
    with pytest.raises(ValueError, match="NUDGE_FAST='maybe'"):
        presets.is_fast()


def test_env_switches_are_parsed_strictly_and_name_the_variable(monkeypatch):
    """false/off/no are "off" (they were once read as "on"); a typo is an error naming the
    variable and the accepted values, for flags and for choices alike."""
    for raw, want in [("false", False), ("OFF", False), ("no", False), ("0", False),
                      ("yes", True), ("on", True), ("1", True)]:
        monkeypatch.setenv("NUDGE_X", raw)
        assert presets.env_flag("NUDGE_X", not want) is want
    for raw in ("", "  "):
        monkeypatch.setenv("NUDGE_X", raw)
        assert presets.env_flag("NUDGE_X", True) is True  # empty: the default
    monkeypatch.setenv("NUDGE_X", "of")
    with pytest.raises(ValueError, match=r"NUDGE_X='of'.*0/false/no/off"):
        presets.env_flag("NUDGE_X", True)
    monkeypatch.setenv("NUDGE_X", "greedy")
    with pytest.raises(ValueError, match=r"NUDGE_X='greedy'.*cdf, race"):
        presets.env_choice("NUDGE_X", ("cdf", "race"), "race")
    monkeypatch.setenv("NUDGE_X", "cdf")
    assert presets.env_choice("NUDGE_X", ("cdf", "race"), "race") == "cdf"


def test_fast_mode_picks_cpu_fast(monkeypatch):
    monkeypatch.setenv("NUDGE_FAST", "1")
    assert presets.get_preset().name == "cpu-fast"
    monkeypatch.setenv("NUDGE_FAST", "0")
    # No GPU on CI machines: hardware detection must land on the CPU preset.
    assert presets.get_preset().name == presets.preset_name_for_hardware()


@pytest.mark.parametrize(
    "hw, want",
    [
        ({"device": "cpu", "gpu_mem_gb": 0, "bf16": False}, "cpu"),
        ({"device": "cuda", "gpu_mem_gb": 14.7, "bf16": False}, "colab-t4"),
        ({"device": "cuda", "gpu_mem_gb": 79.2, "bf16": True}, "large-gpu"),
        ({"device": "cuda", "gpu_mem_gb": 32.0, "bf16": False}, "colab-t4"),  # V100: no bf16
    ],
)
def test_preset_by_hardware(hw, want):
    assert presets.preset_name_for_hardware(hw) == want


def test_fast_preset_is_smaller_than_gpu_presets():
    fast, t4, big = (presets.PRESETS[n] for n in ("cpu-fast", "colab-t4", "large-gpu"))
    for field in ("prompts_per_step", "max_new_tokens", "n_train_problems", "eval_samples"):
        assert getattr(fast, field) < getattr(big, field), field
    assert fast.group_size <= big.group_size  # G = 8 (the paper's) is affordable even on CPU
    assert t4.load_in_4bit and t4.dtype == "float16"  # T4 has no bf16
    assert big.dtype == "bfloat16"


def test_unknown_preset_and_override_errors():
    with pytest.raises(ValueError, match="unknown preset 'tpu'"):
        presets.get_preset("tpu")
    p = presets.get_preset("cpu-fast")
    assert p.with_overrides(group_size=16).group_size == 16
    with pytest.raises(TypeError, match="group_sise"):
        p.with_overrides(group_sise=16)


def test_env_report_names_the_preset(monkeypatch):
    monkeypatch.setenv("NUDGE_FAST", "1")
    line = presets.env_report()
    assert "preset cpu-fast" in line and "torch" in line and "\n" not in line
