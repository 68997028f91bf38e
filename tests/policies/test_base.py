"""Policies: masks by position, nucleus sampling, chunked log-probs, and the three policies."""

import pytest
import torch

from nudgelib.policies.base import chunked_token_logprobs, completion_mask, left_pad, top_p_filter
from nudgelib.policies.char import CharTransformerConfig, CharTransformerPolicy, warm_start
from nudgelib.toy import CategoricalPolicy, ToyPolicy, ToyTask


def test_completion_mask_keeps_the_real_eos_when_pad_equals_eos():
    eos = 2
    ids = torch.tensor([[5, 2, 2, 2],    # stopped after one token: EOS inside, pads outside
                        [5, 6, 7, 8],    # never stopped: truncated
                        [2, 2, 2, 2],    # stopped at once: the EOS is the whole completion
                        [5, 6, 2, 9]])   # tokens after the first EOS do not count
    mask, truncated = completion_mask(ids, [eos])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert truncated.tolist() == [False, True, False, False]
    # masking by token id (the bug) would have dropped the EOS of rows 0, 2 and 3
    assert (mask * (ids == eos)).sum() == 3


def test_completion_mask_with_several_stop_tokens():
    mask, truncated = completion_mask(torch.tensor([[4, 7, 3, 3], [4, 3, 7, 7]]), [3, 7])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert not truncated.any()


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    out = top_p_filter(probs, 0.6)
    # row 0: 0.5 alone < 0.6, so 0.3 joins; 0.2 would start beyond 0.8 -> dropped
    assert torch.equal(out, torch.tensor([[0.0, 0.5, 0.3], [0.9, 0.0, 0.0]]))
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_sample_categorical_draws_each_index_with_its_probability():
    from nudgelib.policies.base import sample_categorical

    probs = torch.tensor([[0.0, 0.5, 0.2, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0, 0.0]]) * 2  # unnormalised
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    draws = torch.stack([sample_categorical(probs, gen) for _ in range(n)])
    freq = torch.stack([torch.bincount(draws[:, r], minlength=5) for r in range(2)]).float() / n
    expected = probs / probs.sum(-1, keepdim=True)
    # 4 binomial standard errors at most; zero-probability entries never drawn
    assert ((freq - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt() + 1e-9).all()
    assert freq[0, 0] == 0 and freq[0, 3] == 0 and freq[1, 0] == 1
    again = torch.stack([sample_categorical(probs, torch.Generator().manual_seed(0))
                         for _ in range(3)])
    assert torch.equal(again[0], again[1])  # the generator alone decides


def test_race_categorical_draws_each_index_with_its_probability():
    """The two-level race (blocks of 4 over 13 tokens: the last block padded) against the
    softmax by hand, with excluded (-inf) tokens and an unnormalised row; and its blocks."""
    from nudgelib.policies.base import draws_per_row, race_blocks, race_categorical

    w = torch.tensor([[0.0, 5.0, 2.0, 0.0, 3.0, 1.0, 0.0, 0.0, 4.0, 0.5, 0.0, 2.5, 1.0],
                      [0.0] * 12 + [7.0]])  # weights; 0 -> log 0 = -inf
    assert race_blocks(13) == (4, 4) and draws_per_row("race", 13) == 8
    assert race_blocks(49152) == (222, 222) and draws_per_row("cdf", 49152) == 1
    n = 40_000
    logw = w.log().repeat(n, 1)  # n draws of each row at once
    draws = race_categorical(logw, torch.Generator().manual_seed(0)).view(n, 2)
    freq = torch.stack([torch.bincount(draws[:, r], minlength=13) for r in range(2)]).float() / n
    expected = w / w.sum(-1, keepdim=True)  # 5/19, 2/19, ... by hand
    assert ((freq - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt() + 1e-9).all()
    assert (freq[w == 0] == 0).all() and freq[1, 12] == 1
    again = race_categorical(logw[:6], torch.Generator().manual_seed(0))
    assert torch.equal(again, draws.flatten()[:6])  # the generator alone decides
    with pytest.raises(ValueError, match="sampler must be one of"):
        draws_per_row("multinomial", 13)


def test_the_race_barely_moves_under_round_off_where_inverse_cdf_does():
    """The same uniform numbers, logits moved by up to 1e-5 (float32 round-off through a
    network's layers is of that order): over 2,048 draws from a 49k-token vocabulary, inverse
    CDF in vocabulary order changes some tokens (every boundary after a moved probability
    moves) and the race none (it changes only when its two best scores are within 1e-5)."""
    from nudgelib.policies.base import draws_per_row, sample_next

    vocab, rows = 49_152, 256
    gen = torch.Generator().manual_seed(0)
    changed = {"cdf": 0, "race": 0}
    for _ in range(8):
        logits = torch.randn(rows, vocab, generator=gen) * 2.0
        logits[:, :8] += 8 * torch.rand(rows, 8, generator=gen)  # a peaked head, a long tail
        moved = logits + (torch.rand(rows, vocab, generator=gen) - 0.5) * 2e-5
        for method in changed:
            u = torch.rand(rows, draws_per_row(method, vocab), generator=gen,
                           dtype=torch.float64)
            a, _ = sample_next(logits, 1.0, 1.0, gen, uniforms=u, method=method)
            b, _ = sample_next(moved, 1.0, 1.0, gen, uniforms=u, method=method)
            changed[method] += int((a != b).sum())
    assert changed["cdf"] >= 3 and changed["race"] == 0, changed


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("checkpoint", [True, False, None])
@pytest.mark.parametrize("chunk", [1, 5, 7, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_naive_values_and_gradients(chunk, temperature, checkpoint):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(3, 7, 8, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7))
    naive = torch.log_softmax(head(hidden) / temperature, -1).gather(
        -1, targets[..., None]).squeeze(-1)
    g_naive = torch.autograd.grad(naive.sum(), [hidden, head.weight])
    chunked = chunked_token_logprobs(hidden, targets, head, temperature=temperature,
                                     chunk_tokens=chunk, checkpoint=checkpoint)
    g_chunk = torch.autograd.grad(chunked.sum(), [hidden, head.weight])
    assert chunked.dtype == torch.float32
    assert torch.allclose(chunked, naive, atol=1e-5)
    for a, b in zip(g_chunk, g_naive):
        assert torch.allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------- toy policies

def test_categorical_policy_matches_the_toy_table():
    task = ToyTask.make({"easy": 3, "hard": 3})
    net = ToyPolicy(task, max_len=5)
    pol = CategoricalPolicy(net)
    s = pol.sample([f"p{i}" for i in range(6)], 4, max_new_tokens=5,
                   generator=torch.Generator().manual_seed(1))
    assert s.completion_ids.shape == (24, 5)
    # end is both EOS and pad: every completion that stopped keeps exactly one end in its mask
    ends = ((s.completion_ids == pol.end_id) & (s.completion_mask > 0)).sum(-1)
    assert torch.equal(ends, (~s.truncated).long())
    lp = pol.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    assert torch.allclose(lp, s.logp, atol=1e-6)
    assert s.texts[0] == str(int(s.completion_ids[0, 0]))
    with pytest.raises(ValueError, match="'p<index>'"):
        pol.sample(["p99"], 2, max_new_tokens=5)


@pytest.fixture(scope="module")
def char_policy():
    pol = CharTransformerPolicy(CharTransformerConfig(d_model=32, n_layers=1, n_heads=2), seed=0)
    pairs = [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]
    losses = warm_start(pol, pairs, steps=60, batch_size=64, lr=3e-3)
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10  # it learns
    return pol


def test_char_policy_sampling_logprobs_match_scoring(char_policy):
    s = char_policy.sample(["3+4=", "12+30=", "7+7="], 5, max_new_tokens=4,
                           generator=torch.Generator().manual_seed(0))
    lp = char_policy.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    assert torch.allclose(lp, s.logp, atol=1e-5)
    assert (s.logp[s.completion_mask == 0] == 0).all()
    assert (s.logp[s.completion_mask > 0] <= 0).all()
    again = char_policy.sample(["3+4=", "12+30=", "7+7="], 5, max_new_tokens=4,
                               generator=torch.Generator().manual_seed(0))
    assert again.texts == s.texts  # the generator fixes the samples


def test_char_policy_scores_do_not_depend_on_left_padding(char_policy):
    comp = torch.tensor([[char_policy.encode_prompts(["8"])[0][0], char_policy.EOS]])
    cm = torch.ones(1, 2)
    alone_ids, alone_mask = left_pad(char_policy.encode_prompts(["3+5="]), 0)
    both_ids, both_mask = left_pad(char_policy.encode_prompts(["3+5=", "123+456="]), 0)
    alone = char_policy.logprobs(alone_ids, alone_mask, comp, cm)
    padded = char_policy.logprobs(both_ids[:1], both_mask[:1], comp, cm)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_char_policy_temperature_and_errors(char_policy):
    s = char_policy.sample(["3+4="], 200, max_new_tokens=3, temperature=0.2,
                           generator=torch.Generator().manual_seed(0))
    # a cold temperature concentrates the samples on the mode
    top = max(set(s.texts), key=s.texts.count)
    assert s.texts.count(top) > 150
    lp_cold = char_policy.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids,
                                   s.completion_mask, temperature=0.2)
    assert torch.allclose(lp_cold, s.logp, atol=1e-5)
    with pytest.raises(ValueError, match="top_p"):
        char_policy.sample(["1+1="], 2, top_p=0.0)
    with pytest.raises(ValueError, match="not in the tiny transformer's vocabulary"):
        char_policy.sample(["1+1=€"], 2)


def test_char_policy_save_load_roundtrip(char_policy, tmp_path):
    char_policy.save(tmp_path / "p")
    other = CharTransformerPolicy(CharTransformerConfig(d_model=32, n_layers=1, n_heads=2), seed=5)
    other.load(tmp_path / "p")
    for a, b in zip(other.net.state_dict().values(), char_policy.net.state_dict().values()):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- language model

@pytest.fixture(scope="module")
def lm_policy(offline_model_dir):
    from nudgelib.policies.hf import HFPolicy

    torch.manual_seed(0)
    return HFPolicy.from_pretrained(str(offline_model_dir), lora_rank=4)


def test_hf_policy_chat_template_and_eos(lm_policy):
    tok = lm_policy.tokenizer
    ids = lm_policy.encode_prompts(["What is 2+3?"])[0]
    text = tok.decode(ids)
    assert "<|im_start|>user" in text and "What is 2+3?" in text and "\\boxed{}" in text
    assert text.rstrip().endswith("<|im_start|>assistant")
    assert tok.eos_token_id in lm_policy.eos_ids and lm_policy.pad_id == tok.pad_token_id


def test_hf_policy_sampling_logprobs_match_scoring_and_keep_eos(lm_policy):
    s = lm_policy.sample(["What is 2+3?", "Name a colour."], 3, max_new_tokens=24,
                         generator=torch.Generator().manual_seed(0))
    assert s.completion_ids.shape[0] == 6
    lp = lm_policy.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    assert ((lp - s.logp).abs() * s.completion_mask).max() < 1e-3
    for i in range(6):
        n = int(s.completion_mask[i].sum())
        if not s.truncated[i]:
            # pad == eos for this tokenizer; the real EOS is the last masked-in token
            assert int(s.completion_ids[i, n - 1]) in lm_policy.eos_ids
        assert (s.completion_ids[i, n:] == lm_policy.pad_id).all()


def test_hf_policy_chunking_does_not_change_logprobs(lm_policy):
    s = lm_policy.sample(["What is 7*6?"], 2, max_new_tokens=12,
                         generator=torch.Generator().manual_seed(1))
    args = (s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    whole = lm_policy.logprobs(*args)
    lm_policy.logprob_chunk_tokens = 3
    try:
        chunked = lm_policy.logprobs(*args)
    finally:
        lm_policy.logprob_chunk_tokens = None
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_shared_rows_numbers_distinct_prompt_rows_by_first_appearance():
    from nudgelib.policies.base import shared_rows

    ids = torch.tensor([[9, 1, 2], [0, 1, 2], [0, 1, 2], [5, 6, 7], [0, 1, 2]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])
    first, inverse = shared_rows(ids, mask)
    # rows 0-2 are the same prompt (the padded position does not count); row 4 differs from
    # them by its mask
    assert first.tolist() == [0, 3, 4] and inverse.tolist() == [0, 0, 0, 1, 2]


def test_shared_prompt_forward_equals_the_full_forward_in_values_and_gradients(lm_policy):
    pol = lm_policy
    lora_b = [p for n, p in pol.model.named_parameters() if "lora_B" in n]
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # make the adapter act, on prompt tokens too (B starts at zero)
        for p in lora_b:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    try:
        # prompts of different lengths (left padding), completions of different lengths
        s = pol.sample(["What is 2+3?", "Name a colour, then say why you like it."], 3,
                       max_new_tokens=10, generator=torch.Generator().manual_seed(0))
        args = (s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
        weights = torch.randn(s.completion_ids.shape, generator=gen)
        params = dict((n, p) for n, p in pol.model.named_parameters() if p.requires_grad)

        def run(share):
            pol.share_prompts = share
            for p in params.values():
                p.grad = None
            lp = pol.logprobs(*args)
            (lp * weights).sum().backward()
            return lp.detach(), {n: p.grad.clone() for n, p in params.items()}

        shared, g_shared = run(True)
        full, g_full = run(False)
        torch.testing.assert_close(shared, full, atol=2e-5, rtol=1e-4)
        for n in params:  # the same gradient up to float32 summation order
            err = (g_shared[n] - g_full[n]).norm() / g_full[n].norm().clamp(min=1e-12)
            assert err < 1e-4, (n, float(err))
        assert any(g.abs().sum() > 0 for g in g_full.values())
        # the shared-prefill sampler's log-probs are those of the scoring pass
        assert ((full - s.logp).abs() * s.completion_mask).max() < 1e-3
    finally:
        pol.share_prompts = True
        with torch.no_grad():
            for p in lora_b:
                p.zero_()


def test_sampling_with_lora_folded_in_matches_the_adapter_and_restores_the_weights(lm_policy):
    pol = lm_policy
    lora_b = [p for n, p in pol.model.named_parameters() if "lora_B" in n]
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in lora_b:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    before = {n: p.detach().clone() for n, p in pol.model.named_parameters()}
    pol.fast_decode = False  # the fold is transformers' forward's (the lean loop needs none)
    try:
        runs = {}
        for merge in (True, False):
            pol.merge_for_sampling = merge
            runs[merge] = pol.sample(["What is 2+3?"], 4, max_new_tokens=12,
                                     generator=torch.Generator().manual_seed(7))
        pol.merge_for_sampling = True
        with pol._sampling_weights():  # the deltas really are folded in while sampling
            assert any(not torch.equal(p, before[n]) for n, p in pol.model.named_parameters()
                       if "base_layer" in n)
        assert torch.equal(runs[True].completion_ids, runs[False].completion_ids)
        assert (runs[True].logp - runs[False].logp).abs().max() < 1e-4
        for n, p in pol.model.named_parameters():  # bit-identical afterwards
            assert torch.equal(p, before[n]), n
    finally:
        pol.merge_for_sampling, pol.fast_decode = True, True
        with torch.no_grad():
            for p in lora_b:
                p.zero_()


def test_hf_policy_adapter_save_load_roundtrip(lm_policy, tmp_path):
    lm_policy.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    before = {n: p.detach().clone() for n, p in lm_policy.model.named_parameters()
              if p.requires_grad}
    with torch.no_grad():
        for p in lm_policy.trainable_parameters():
            p.add_(1.0)
    lm_policy.load(tmp_path / "adapter")
    for n, p in lm_policy.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]), n


def test_hf_policy_refuses_4bit_without_cuda(offline_model_dir):
    from nudgelib.policies.hf import HFPolicy

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="load_in_4bit=True needs a CUDA GPU"):
        HFPolicy.from_pretrained(str(offline_model_dir), load_in_4bit=True)


def test_hf_policy_gradient_checkpointing_with_lora_trains(offline_model_dir):
    """PEFT + checkpointing needs input gradients on the frozen embeddings (docs/method.md §6)."""
    from nudgelib.policies.hf import HFPolicy

    torch.manual_seed(0)
    pol = HFPolicy.from_pretrained(str(offline_model_dir), lora_rank=4,
                                   gradient_checkpointing=True)
    assert pol.model.is_gradient_checkpointing
    s = pol.sample(["What is 2+3?"], 2, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    pol.train_mode(True)
    with torch.no_grad():
        for p in pol.trainable_parameters():
            p.normal_(std=0.01)  # LoRA's B = 0 at init would block A's gradient
    lp = pol.logprobs(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    lp.sum().backward()
    grads = [p.grad for p in pol.trainable_parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    base = [p for p in pol.model.parameters() if not p.requires_grad]
    assert base and all(p.grad is None for p in base)
