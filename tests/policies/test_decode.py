"""nudgelib.policies.decode: the lean decode loop against transformers' forward (the reference loop) and
against a float64 computation, its switches, and the models it refuses."""

import pytest
import torch

from nudgelib.policies.decode import LeanDecoder

# prompts of different lengths (left padding); the first twice, so one distinct prompt has
# 4 rows and the other 2 (unequal groups share the prompt's keys/values)
PROMPTS = ["What is 2+3?", "Name a colour, then say why you like it.", "What is 2+3?"]
SWITCHES = {"lean": (True, False, False), "lean+compact": (True, True, False),
            "lean+pack": (True, False, True), "lean+compact+pack": (True, True, True)}


def _sample(pol, switches, *, tokens=24, seed=0):
    pol.fast_decode, pol.compact_finished, pol.pack_weights = switches
    try:
        return pol.sample(PROMPTS, 2, max_new_tokens=tokens,
                          generator=torch.Generator().manual_seed(seed))
    finally:
        pol.fast_decode, pol.compact_finished, pol.pack_weights = True, True, True


def _common_prefix(a, b):
    """Mask of the positions before each row's first differing token (both masked in)."""
    t = a.completion_ids.shape[1]
    diff = a.completion_ids != b.completion_ids
    first = torch.where(diff.any(1), diff.float().argmax(1), torch.full((diff.shape[0],), t))
    return (torch.arange(t)[None] < first[:, None]) & a.completion_mask.bool(), first


@pytest.fixture(scope="module")
def smol(offline_model_dir):
    from nudgelib.policies.hf import HFPolicy

    torch.manual_seed(0)
    pol = HFPolicy.from_pretrained(str(offline_model_dir), lora_rank=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # an adapter that acts (B starts at 0), folded in while sampling
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return pol


@pytest.mark.parametrize("sampler", ["race", "cdf"])
def test_smollm2_lean_loop_samples_what_the_reference_loop_samples(smol, sampler):
    """Same generator, every switch: the same tokens, and log-probs within float32 round-off
    of the reference's. With the inverse-CDF sampler (``cdf``) a row may leave the reference
    at a token both loops give probability < 1e-3: it moves a boundary between improbable
    neighbours under float32 round-off; the race (the default) does not."""
    smol.sampler = sampler
    try:
        ref = _sample(smol, (False, False, False))
        runs = {name: _sample(smol, sw) for name, sw in SWITCHES.items()}
    finally:
        smol.sampler = "race"
    for name, s in runs.items():
        same, first = _common_prefix(ref, s)
        diverged = (first < ref.completion_ids.shape[1]).nonzero().squeeze(1).tolist()
        assert len(diverged) <= (1 if sampler == "cdf" else 0), (name, diverged)
        for r in diverged:
            c = int(first[r])
            assert max(ref.logp[r, c], s.logp[r, c]) < -6.9, (name, r, c)
        d = (ref.logp - s.logp).abs() * same
        assert float(d.sum() / same.sum()) < 1e-5 and float(d.max()) < 1e-4, (name, d.max())
        assert torch.equal(s.prompt_ids, ref.prompt_ids) and s.texts[0] and len(s.texts) == 6
    assert isinstance(smol._decoder, LeanDecoder) and smol._lean is None


def test_the_sampler_is_chosen_by_name_or_environment(smol, monkeypatch):
    from nudgelib.policies.hf import HFPolicy

    monkeypatch.setenv("NUDGE_SAMPLER", "cdf")
    assert HFPolicy(smol.model, smol.tokenizer).sampler == "cdf"
    monkeypatch.delenv("NUDGE_SAMPLER")
    assert HFPolicy(smol.model, smol.tokenizer).sampler == "race"
    with pytest.raises(ValueError, match="sampler must be one of"):
        HFPolicy(smol.model, smol.tokenizer, sampler="greedy")
    # the two samplers draw differently from one generator (so the switch switches)
    a, b = (_sample_with(smol, m) for m in ("race", "cdf"))
    assert not torch.equal(a.completion_ids, b.completion_ids)


def _sample_with(pol, sampler):
    pol.sampler = sampler
    try:
        return _sample(pol, (True, True, True))
    finally:
        pol.sampler = "race"


def test_compaction_draws_the_same_numbers_for_the_live_rows(smol):
    """Dropping stopped rows changes nothing: the same tokens with and without compaction,
    and the same log-probs to round-off (the packed base products are row-invariant, the
    adapter's small products are not; rows stop at their first newline here, as short-answer
    runs do)."""
    from nudgelib.policies.hf import newline_token_ids

    smol.stop_ids = newline_token_ids(smol.tokenizer)
    try:
        a = _sample(smol, (True, False, True), tokens=32, seed=3)
        b = _sample(smol, (True, True, True), tokens=32, seed=3)
    finally:
        smol.stop_ids = ()
    assert (a.completion_mask.sum(1) < 32).any(), "some row must stop early for this to test"
    assert torch.equal(a.completion_ids, b.completion_ids)
    d, m = (a.logp - b.logp).abs(), a.completion_mask
    assert float((d * m).sum() / m.sum()) < 1e-5 and d.max() < 1e-4


def test_lean_loop_is_as_close_to_float64_as_the_reference_loop(smol):
    """Error of each loop's log-probs against a float64 scoring of its own tokens: the lean
    loop's (packed weights included) is within 1.5x the reference's."""
    runs = {"ref": _sample(smol, (False, False, False)),
            "lean": _sample(smol, (True, True, True))}
    smol.model.double()
    try:
        err = {}
        for k, s in runs.items():
            with torch.no_grad():
                lp64 = smol.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids,
                                     s.completion_mask).float()
            m = s.completion_mask
            err[k] = float(((s.logp - lp64).abs() * m).sum() / m.sum())
    finally:
        smol.model.float()
    assert 0 < err["ref"] < 1e-4
    assert err["lean"] <= 1.5 * err["ref"], err


def test_qwen2_with_biases_and_grouped_heads(offline_model_dir):
    """A small random Qwen2 (q/k/v biases, 4 query heads on 2 key/value heads) with the
    SmolLM2 tokenizer: the same tokens as the reference loop."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from nudgelib.policies.hf import HFPolicy

    tok = AutoTokenizer.from_pretrained(str(offline_model_dir))
    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      initializer_range=0.5, tie_word_embeddings=False)
    pol = HFPolicy(Qwen2ForCausalLM(cfg).eval(), tok)
    assert LeanDecoder.unsupported_reason(pol.model) is None
    assert pol.model.model.layers[0].self_attn.q_proj.bias is not None
    ref = _sample(pol, (False, False, False), tokens=12)
    s = _sample(pol, (True, True, True), tokens=12)
    assert isinstance(pol._decoder, LeanDecoder)
    assert torch.equal(s.completion_ids, ref.completion_ids)
    assert (s.logp - ref.logp).abs().max() < 1e-4


def test_models_the_loop_cannot_run_exactly_are_refused_by_name(offline_model_dir):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    assert "model_type 'gpt2'" in LeanDecoder.unsupported_reason(gpt2)
    assert LeanDecoder.for_model(gpt2) is None
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2))
    assert LeanDecoder.unsupported_reason(llama) is None
    llama.model.layers[1].mlp.up_proj = torch.nn.Sequential(torch.nn.Linear(32, 64))
    assert "layer 1 up_proj is Sequential" in LeanDecoder.unsupported_reason(llama)
    with pytest.raises(ValueError, match="LeanDecoder: layer 1 up_proj"):
        LeanDecoder(llama)


def test_the_lean_loop_computes_the_adapter_or_not_as_peft_does(smol):
    """Inside ``disable_adapter()`` the lean loop samples the base model, as the reference
    does; outside, the adapter's terms change the log-probs (the adapter acts); and the packed
    weights are made once while the base weights are unchanged."""
    with smol.model.disable_adapter():
        ref_off = _sample(smol, (False, False, False), tokens=12)
        off = _sample(smol, (True, True, True), tokens=12)
    on = _sample(smol, (True, True, True), tokens=12)
    assert torch.equal(off.completion_ids, ref_off.completion_ids)
    assert (off.logp - ref_off.logp).abs().max() < 1e-4
    same, _ = _common_prefix(on, off)
    assert ((on.logp - off.logp).abs() * same).max() > 1e-3, "the adapter must act"
    packs = smol._decoder.packs._packs
    packed = {k: v[1] for k, v in packs.items()}
    _sample(smol, (True, True, True), tokens=4)
    assert all(packs[k][1] is v for k, v in packed.items()), "repacked"
    # per adapted linear: W alone (adapter off) and W with its delta (on); and the head
    assert len([k for k in packed if k[2]]) == 7 * len(smol._decoder.modules)
    assert len([k for k in packed if not k[2]]) == 7 * len(smol._decoder.modules) + 1


def test_training_through_packed_frozen_weights_gives_the_plain_gradients(smol):
    """``pack_weights``: log-probs and the adapter's gradients through oneDNN's packed frozen
    base weights equal the plain path's to float32 round-off; the modules' own forward is
    back afterwards."""
    s = _sample(smol, (True, True, True), tokens=10)
    args = (s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    weights = torch.randn(s.completion_ids.shape, generator=torch.Generator().manual_seed(2))
    params = {n: p for n, p in smol.model.named_parameters() if p.requires_grad}
    runs = {}
    for pack in (False, True):
        smol.pack_weights = pack
        for p in params.values():
            p.grad = None
        with smol._frozen_packed() as n_patched:
            assert (n_patched > 0) == pack
        lp = smol.logprobs(*args)
        (lp * weights).sum().backward()
        runs[pack] = lp.detach(), {n: p.grad.clone() for n, p in params.items()}
    smol.pack_weights = True
    for p in params.values():
        p.grad = None
    torch.testing.assert_close(runs[True][0], runs[False][0], atol=1e-4, rtol=1e-4)
    for n in params:
        g, ref = runs[True][1][n], runs[False][1][n]
        assert (g - ref).norm() / ref.norm().clamp(min=1e-12) < 1e-4, n
    assert not any("forward" in vars(m) for m in smol.model.modules())


def test_a_changed_adapter_is_packed_again(smol):
    """The packed matrices hold the LoRA deltas folded in; an optimizer-like in-place change
    of the adapter makes them be packed again, and sampling follows the new adapter as the
    reference loop does."""
    lora_b = [p for n, p in smol.model.named_parameters() if "lora_B" in n]
    _sample(smol, (True, True, True), tokens=4)
    packs = smol._decoder.packs._packs
    before = {k: v[1] for k, v in packs.items()}
    with torch.no_grad():
        for p in lora_b:
            p.mul_(-1.0)  # in place: the version counter moves, as an optimizer step's does
    try:
        ref = _sample(smol, (False, False, False), tokens=12)
        s = _sample(smol, (True, True, True), tokens=12)
        assert all(packs[k][1] is not v for k, v in before.items() if k[2]), "not repacked"
        assert any(k[2] for k in before)
        same, _ = _common_prefix(ref, s)
        d = (ref.logp - s.logp).abs() * same
        assert float(d.sum() / same.sum()) < 1e-5 and float(d.max()) < 1e-4
    finally:
        with torch.no_grad():
            for p in lora_b:
                p.mul_(-1.0)


def test_the_lora_fold_is_w_plus_scaling_times_b_a_by_hand():
    """with_lora_delta (both samplers' fold) on a 5 -> 3 layer, r = 2, alpha = 4 (scaling 2):
    W + 2 * B @ A from the matrices themselves; no adapter named: a copy of W."""
    from peft import LoraConfig, get_peft_model

    from nudgelib.policies.decode import with_lora_delta

    torch.manual_seed(0)
    net = get_peft_model(torch.nn.Sequential(torch.nn.Linear(5, 3)),
                         LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    layer = net.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    w = layer.get_base_layer().weight.detach().clone()
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    expected = [[float(w[i, j]) + 2 * sum(float(b[i, k]) * float(a[k, j]) for k in range(2))
                 for j in range(5)] for i in range(3)]
    with torch.no_grad():
        got = with_lora_delta(w, layer, ["default"])
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6) and not torch.equal(got, w)
    same = with_lora_delta(w, layer, [])
    assert torch.equal(same, w) and same.data_ptr() != w.data_ptr()
