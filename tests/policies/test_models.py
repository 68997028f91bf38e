import json

import pytest

from nudgelib.policies import models
from nudgelib.presets import OFFLINE_SMOLLM2


def test_offline_checkpoint_is_a_plain_trainable_model(offline_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((offline_model_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(offline_model_dir)
    model = AutoModelForCausalLM.from_pretrained(offline_model_dir)
    assert not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    assert new.numel() == 8
    assert "5" in tok.decode(new)  # a real pretrained model, not random weights
    # trainable: a backward pass produces gradients
    model.train()
    loss = model(**enc, labels=enc["input_ids"]).loss
    loss.backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_loader_accepts_alias_and_path(offline_model_dir):
    model, tok = models.load_model_and_tokenizer(OFFLINE_SMOLLM2)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.dtype.is_floating_point
    assert models.resolve_model_path(OFFLINE_SMOLLM2) == str(offline_model_dir)
    assert models.resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_missing_model_error_is_actionable(tmp_path):
    with pytest.raises(models.ModelNotAvailable, match="hub id"):
        models.load_model_and_tokenizer(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="dtype='float33'"):
        models.load_model_and_tokenizer(OFFLINE_SMOLLM2, dtype="float33")
