"""Scale presets: the one switch between CI-sized runs and a learner's GPU.

``NUDGE_FAST=1`` (set by the tests and CI) makes every notebook and script pick the tiny
``cpu-fast`` preset. Unset, :func:`get_preset` picks a preset by hardware: ``cpu`` without a
GPU, ``colab-t4`` on a GPU with < 24 GB (a free Colab T4 has 15 GB), ``large-gpu`` above.
Notebook cells never hold these numbers; they call ``get_preset()``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, replace

from nudgelib.tasks.arithmetic import INSTRUCTION as ARITHMETIC_INSTRUCTION

FAST_ENV = "NUDGE_FAST"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

OFFLINE_SMOLLM2 = "offline:smollm2-135m-instruct"
"""Model id that :func:`nudgelib.policies.models.resolve_model_path` maps to the offline checkpoint."""


def env_flag(name: str, default: bool) -> bool:
    """A boolean switch from environment variable ``name``: 1/true/yes/on or 0/false/no/off
    (any case); unset or empty gives ``default``. Anything else is an error naming the
    variable, never a silent "on"."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={os.environ[name]!r} is not understood; "
                     f"expected one of 1/true/yes/on or 0/false/no/off (or unset)")


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` from environment variable ``name`` (unset or empty: ``default``);
    anything else is an error naming the variable and the choices."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw not in choices:
        raise ValueError(f"environment variable {name}={raw!r} is not understood; expected "
                         f"one of {', '.join(choices)} (or unset)")
    return raw


def is_fast() -> bool:
    """True when ``NUDGE_FAST`` asks for tiny settings (CI, tests)."""
    return env_flag(FAST_ENV, False)


@dataclass(frozen=True)
class Preset:
    """Sizes for one scale of run. Later stages read only the fields they need."""

    name: str
    description: str
    model_id: str
    device: str
    dtype: str
    load_in_4bit: bool
    lora_rank: int
    group_size: int
    prompts_per_step: int
    max_new_tokens: int
    n_train_problems: int
    n_eval_problems: int
    eval_samples: int
    toy_steps: int
    task: str = "gsm8k"  # the LM stages' task: "arithmetic" on CPU (nudgelib.tasks.arithmetic)
    tier_counts: dict | None = None  # task "arithmetic": training problems per tier
    pipeline: tuple = ()  # GRPO -> NuRL of notebooks 06/07: (steps, latest switch step,
    #   validate every, (validation problems, samples each)); see pipeline.pipeline_plan

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **changes) -> Preset:
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise TypeError(
                f"unknown preset field(s) {sorted(unknown)}; fields are {sorted(asdict(self))}"
            )
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="cpu-fast",
            description="CI and tests: tiny everything, minutes on 2 CPU cores",
            model_id=OFFLINE_SMOLLM2,
            device="cpu",
            dtype="float32",
            load_in_4bit=False,
            lora_rank=8,
            group_size=8,
            prompts_per_step=8,
            max_new_tokens=12,
            n_train_problems=24,
            n_eval_problems=16,
            eval_samples=4,
            toy_steps=30,
            task="arithmetic",
            tier_counts={"sum": 8, "product": 8, "chain": 8},
            pipeline=(6, 3, 2, (12, 4)),
        ),
        Preset(
            name="cpu",
            description="a laptop without a GPU: small real runs, tens of minutes",
            model_id=OFFLINE_SMOLLM2,
            device="cpu",
            dtype="float32",
            load_in_4bit=False,
            lora_rank=8,
            group_size=8,
            prompts_per_step=8,
            max_new_tokens=12,
            n_train_problems=80,
            n_eval_problems=64,
            eval_samples=16,
            toy_steps=300,
            task="arithmetic",
            tier_counts={"sum": 24, "product": 24, "chain": 32},
            pipeline=(30, 15, 5, (24, 4)),
        ),
        Preset(
            name="colab-t4",
            description="a free Colab T4 (15 GB, no bf16): 4-bit base + LoRA, fp16 compute",
            model_id="Qwen/Qwen2.5-0.5B-Instruct",
            device="cuda",
            dtype="float16",
            load_in_4bit=True,
            lora_rank=16,
            group_size=8,
            prompts_per_step=8,
            max_new_tokens=384,
            n_train_problems=2000,
            n_eval_problems=200,
            eval_samples=32,
            toy_steps=1000,
            pipeline=(200, 120, 10, (64, 4)),
        ),
        Preset(
            name="large-gpu",
            description="a GPU with >= 24 GB and bf16 (A100, H100, L4 24 GB...)",
            model_id="Qwen/Qwen2.5-1.5B-Instruct",
            device="cuda",
            dtype="bfloat16",
            load_in_4bit=False,
            lora_rank=32,
            group_size=8,
            prompts_per_step=16,
            max_new_tokens=768,
            n_train_problems=7473,
            n_eval_problems=500,
            eval_samples=64,
            toy_steps=3000,
            pipeline=(400, 200, 10, (128, 8)),
        ),
    ]
}


def detect_hardware() -> dict:
    """What this machine offers: device, GPU name and memory, bf16 support, CPU cores."""
    info = {"device": "cpu", "gpu": None, "gpu_mem_gb": 0.0, "bf16": False,
            "cpu_cores": os.cpu_count() or 1}
    try:
        import torch
    except ImportError:  # the presets module must work before torch is installed
        return info
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device="cuda", gpu=props.name, gpu_mem_gb=round(props.total_memory / 2**30, 1),
                    bf16=bool(torch.cuda.is_bf16_supported()))
    return info


def preset_name_for_hardware(hw: dict | None = None) -> str:
    hw = detect_hardware() if hw is None else hw
    if hw["device"] != "cuda":
        return "cpu"
    return "large-gpu" if hw["gpu_mem_gb"] >= 24 and hw["bf16"] else "colab-t4"


SHORT_ANSWER_INSTRUCTION = "Answer with the final number in \\boxed{}."
"""An instruction for a small model on GSM8K with a short budget: asked for the number alone,
some of SmolLM2-135M's completions end in time (the benchmarks use it)."""

def _lm_fields(name: str) -> dict:
    """TrainConfig fields of the language-model preset ``name`` (a row of :data:`PRESETS`)."""
    p = PRESETS[name]
    common = dict(name=name, policy="hf", model_id=p.model_id, group_size=p.group_size,
                  prompts_per_step=p.prompts_per_step, max_new_tokens=p.max_new_tokens,
                  load_in_4bit=p.load_in_4bit, dtype=p.dtype, device=p.device)
    if p.task == "arithmetic":
        counts = p.tier_counts
        return dict(**common, task="arithmetic", difficulty_counts=dict(counts),
                    stop_at_newline=True, n_train_problems=sum(counts.values()),
                    lora_rank=p.lora_rank, lr=3e-4, instruction=ARITHMETIC_INSTRUCTION,
                    hint_type="partial_steps", micro_batch_size=64, hint_explanation_tokens=48,
                    hint_tokens=24)
    return dict(**common, task="gsm8k", n_train_problems=p.n_train_problems,
                problem_selection="random", lr=2e-5, lora_rank=p.lora_rank,
                gradient_checkpointing=p.device == "cuda", micro_batch_size=16,
                format_weight=0.1, overlong_weight=1.0, warmup_steps=5)


TRAIN_PRESETS: dict[str, dict] = {
    "toy-fast": dict(name="toy-fast", lr=3e-4, prompts_per_step=32),
    "toy-table": dict(name="toy-table", policy="toy-table", task="toy-table",
                      difficulty_counts={"easy": 8, "medium": 8, "hard": 8},
                      prompts_per_step=24, max_new_tokens=12, lr=0.1, eps_high=0.2),
    **{name: _lm_fields(name) for name in ("cpu-fast", "cpu", "colab-t4", "large-gpu")},
}
"""The one table of training presets: name -> the TrainConfig fields it sets (the rest keep
their defaults); :func:`nudgelib.training.config.get_train_config` builds and validates them.
The language-model rows are made from the hardware rows of :data:`PRESETS`.

The CPU rows train on short-answer arithmetic (``Preset.tier_counts``): SmolLM2-135M cannot do
GSM8K, but its pass rates on these tiers go from learnable to 0/G. Settings chosen from measured
runs (docs/results.md): G = 8, 8 prompts per step, lr 3e-4, teacher
partial-step hints for the hard tier; 12 new tokens and a stop at the first newline: the longest
answer line of the default tiers, "3 + 6 + 8 = 17", is 11 tokens (with 10, the first design, it
was cut to "= 1"), and nothing after the answer line is sampled."""

def get_preset(name: str | None = None) -> Preset:
    """The preset called ``name``; else ``cpu-fast`` under NUDGE_FAST=1; else by hardware."""
    if name is None:
        name = "cpu-fast" if is_fast() else preset_name_for_hardware()
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None


def env_report() -> str:
    """One line: versions, device, and the preset that will be used."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for dist in ("torch", "transformers", "peft", "math-verify"):
        try:  # read metadata instead of importing: no import side effects, no slow imports
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    hw = detect_hardware()
    dev = f"GPU {hw['gpu']} ({hw['gpu_mem_gb']} GB)" if hw["device"] == "cuda" else "no GPU"
    parts.append(f"{dev}, {hw['cpu_cores']} CPU cores")
    parts.append(f"{FAST_ENV}={'1' if is_fast() else '0'} -> preset {get_preset().name}")
    return " | ".join(parts)
