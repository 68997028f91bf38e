"""A tiny character-level transformer trained from scratch on the addition toy
(:mod:`nudgelib.tasks.addition`), warm-started with supervised learning on easy problems
(:func:`warm_start`), behind the policy interface of :mod:`nudgelib.policies.base`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from nudgelib.policies.base import (
    ModulePolicy,
    chunked_token_logprobs,
    draws_per_row,
    left_pad,
    sample_next,
)
from nudgelib.ui.progress import progress_bar

CHAR_VOCAB = "0123456789+-*=()?:;,. abcdefghijklmnopqrstuvwxyzH|"
"""Characters of the tiny transformer; id 0 is padding, id 1 is EOS, chars start at 2."""


@dataclass
class CharTransformerConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 48
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by "
                             f"n_heads={self.n_heads}")


class _Block(nn.Module):
    def __init__(self, cfg: CharTransformerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(b, length, d))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A GPT-style decoder over :data:`CHAR_VOCAB` (learned positions, pre-LayerNorm)."""

    def __init__(self, cfg: CharTransformerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CharTransformerConfig()
        self.vocab_size = len(CHAR_VOCAB) + 2
        self.tok = nn.Embedding(self.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, self.vocab_size, bias=False)

    def hidden(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Final hidden states [N, L, d]; ``mask`` [N, L] is 1 on real tokens (left padding ok)."""
        if ids.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds the model's "
                             f"max_len={self.cfg.max_len}")
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        x = self.tok(ids) + self.pos(pos)
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        attn = causal[None, None] & mask.bool()[:, None, None, :]
        attn = attn | torch.eye(length, dtype=torch.bool, device=ids.device)[None, None]
        for blk in self.blocks:
            x = blk(x, attn)
        return self.ln(x)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.hidden(ids, mask))


def char_encode(text: str) -> list[int]:
    bad = sorted({c for c in text if c not in CHAR_VOCAB})
    if bad:
        raise ValueError(f"characters {bad} are not in the tiny transformer's vocabulary "
                         f"{CHAR_VOCAB!r}")
    return [CHAR_VOCAB.index(c) + 2 for c in text]


class CharTransformerPolicy(ModulePolicy):
    """A tiny character-level transformer; prompts are raw strings such as ``"12+34="``."""

    PAD, EOS = 0, 1
    hint_template = "{hint}|{question}"
    """Hints go before the question so the answer still follows ``=``: ``H6..|345+278=``."""

    def __init__(self, cfg: CharTransformerConfig | None = None, *, seed: int = 0,
                 sampler: str = "cdf"):
        draws_per_row(sampler, 1)  # names a bad sampler now
        self.sampler = sampler
        torch.manual_seed(seed)
        self.net = CharTransformer(cfg)
        self.eos_ids, self.pad_id = (self.EOS,), self.PAD

    def encode_prompts(self, prompts):
        return [char_encode(p) for p in prompts]

    def decode(self, ids, mask):
        out = []
        for row, m in zip(ids.tolist(), mask.tolist()):
            out.append("".join(CHAR_VOCAB[i - 2] for i, keep in zip(row, m)
                               if keep and i >= 2))
        return out

    def _generate(self, prompt_ids, prompt_mask, *, temperature, top_p, max_new_tokens,
                  generator):
        ids, mask = prompt_ids, prompt_mask
        budget = min(max_new_tokens, self.net.cfg.max_len - ids.shape[1])
        if budget < 1:
            raise ValueError(f"prompts of {ids.shape[1]} tokens leave no room in max_len="
                             f"{self.net.cfg.max_len}")
        toks, logps = [], []
        done = torch.zeros(ids.shape[0], dtype=torch.bool)
        for _ in range(budget):
            logits = self.net(ids, mask)[:, -1]
            tok, lp = sample_next(logits, temperature, top_p, generator, method=self.sampler)
            tok = torch.where(done, torch.full_like(tok, self.PAD), tok)
            toks.append(tok)
            logps.append(lp)
            done |= tok == self.EOS
            ids = torch.cat([ids, tok[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(tok)[:, None]], 1)
            if done.all():
                break
        return torch.stack(toks, 1), torch.stack(logps, 1)

    def logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                 temperature=1.0):
        ids = torch.cat([prompt_ids, completion_ids], 1)
        mask = torch.cat([prompt_mask, torch.ones_like(completion_ids)], 1)
        p = prompt_ids.shape[1]
        h = self.net.hidden(ids, mask)[:, p - 1:-1]
        return chunked_token_logprobs(h, completion_ids, self.net.head,
                                      temperature=temperature) * completion_mask

    def save(self, path):
        from dataclasses import asdict

        super().save(path)
        (Path(path) / "config.json").write_text(json.dumps(
            {"kind": "char-transformer", "vocab": CHAR_VOCAB, **asdict(self.net.cfg)}, indent=1))


def warm_start(policy: CharTransformerPolicy, pairs: Sequence[tuple[str, str]], *,
               steps: int = 600, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
               progress: bool = False) -> list[float]:
    """Supervised warm start: maximise log p(answer + EOS | prompt) on (prompt, answer) pairs.

    Returns the loss per step. Deterministic for a given seed.
    """
    if not pairs:
        raise ValueError("warm_start needs at least one (prompt, answer) pair")
    gen = torch.Generator().manual_seed(seed)
    enc_p = policy.encode_prompts([p for p, _ in pairs])
    enc_a = [char_encode(a) + [policy.EOS] for _, a in pairs]
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    policy.train_mode(True)
    losses = []
    for _ in progress_bar(range(steps), desc="warm start", disable=not progress):
        idx = torch.randint(0, len(pairs), (batch_size,), generator=gen).tolist()
        p_ids, p_mask = left_pad([enc_p[i] for i in idx], policy.PAD)
        width = max(len(enc_a[i]) for i in idx)
        c_ids = torch.full((batch_size, width), policy.PAD, dtype=torch.long)
        c_mask = torch.zeros(batch_size, width)
        for j, i in enumerate(idx):
            c_ids[j, :len(enc_a[i])] = torch.tensor(enc_a[i])
            c_mask[j, :len(enc_a[i])] = 1
        logp = policy.logprobs(p_ids, p_mask, c_ids, c_mask)
        loss = -(logp.sum() / c_mask.sum())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    policy.train_mode(False)
    return losses
