"""A lean decode loop for Llama-family language models (Llama, SmolLM2, Qwen2 / Qwen2.5): what
:class:`nudgelib.policies.hf.HFPolicy` samples with when the model allows it.

Profiling one CPU decode step of transformers' own forward (``bench/rollouts.py`` settings:
SmolLM2-135M, 32 rows, 64 new tokens) showed where a step goes besides the matrix products:
the KV cache grows by concatenation (every step copies the whole cache, ~14 % of the time),
every row carries its own copy of its prompt's keys and values, the per-layer Python of the
model classes (masks, cache objects, hooks) adds ~30 ms a step, and rows that have already
stopped keep being computed. This loop, given the same weights:

* keeps each distinct prompt's keys/values once (``[U, heads, P, d]``, from transformers' own
  prefill) and attends to them with the G rows of the prompt as G queries of one sequence;
* writes the completion's keys/values into a pre-allocated buffer (no concatenation);
* drops rows that have stopped from the batch (``compact=True``), so the matrix products, the
  LM head and the sampling run on the live rows only;
* draws one uniform number per original row every step, as the reference loop does, so the
  same generator gives the same tokens whichever rows are still live.

Exactness: the same arithmetic as transformers' Llama/Qwen2 forward (RMSNorm in float32,
transformers' own rotary embedding, softmax attention in float32); the log-probs of the
tokens agree with the reference loop's to float32 round-off (tests: < 1e-5) and the tokens are
the same. ``HFPolicy(fast_decode=False)`` samples through transformers' forward instead.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nudgelib.policies.base import draws_per_row, sample_next

__all__ = ["SUPPORTED_MODEL_TYPES", "LeanDecoder", "PackedWeights", "can_pack", "with_lora_delta"]

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


def _base_linear(m: nn.Module) -> nn.Linear | None:
    """The float ``nn.Linear`` under ``m`` (a PEFT LoRA wrapper unwrapped), or None."""
    if hasattr(m, "get_base_layer"):
        if not hasattr(m, "lora_A"):
            return None  # another PEFT method: its arithmetic is not modelled here
        m = m.get_base_layer()
    if type(m) is not nn.Linear or not m.weight.is_floating_point():
        return None
    return m


class _FrozenPacked(torch.autograd.Function):
    """``x @ W.T + b`` for a frozen W through oneDNN's packed copies of W (forward) and of
    W.T (the input's gradient); no gradient for W or b."""

    @staticmethod
    def forward(ctx, x, w_packed, wt_packed, bias):
        ctx.wt = wt_packed
        return torch.ops.mkldnn._linear_pointwise(x, w_packed, bias, "none", [], "")

    @staticmethod
    def backward(ctx, gy):
        gx = torch.ops.mkldnn._linear_pointwise(gy.contiguous(), ctx.wt, None, "none", [], "")
        return gx, None, None, None


def _packed_apply(w_packed, wt_packed, bias, x):
    return _FrozenPacked.apply(x, w_packed, wt_packed, bias)


def can_pack(w: Tensor) -> bool:
    """oneDNN packs ``w``: a float32 CPU weight, with oneDNN in this torch build."""
    return (w.device.type == "cpu" and w.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def with_lora_delta(w: Tensor, module, adapters) -> Tensor:
    """``w`` plus the deltas of the named LoRA ``adapters`` of ``module`` (PEFT's
    ``get_delta_weight``: B @ A times the scaling, fan-in/fan-out handled), in ``w``'s dtype: the
    folded weight both samplers use. A new tensor (a copy of ``w`` when no adapter is named, e.g.
    a layer the active adapter does not reach); ``w`` is left as it was."""
    if not adapters:
        return w.clone()
    return w + sum(module.get_delta_weight(a) for a in adapters).to(w.dtype)


class PackedWeights:
    """oneDNN's packed copies of weights, kept while a weight is unchanged (same storage and
    version counter) and made again when it changed."""

    def __init__(self):
        self._packs: dict[tuple, tuple] = {}

    def get(self, w: Tensor, transposed: bool = False, fold=None) -> Tensor:
        """The packed ``w`` (``transposed``: of ``w.T``); ``fold=(lora_module, [(A, B, scaling,
        adapter), ...])``: of ``w`` plus those adapters' deltas."""
        def version(t):
            return (t.data_ptr(), t._version, tuple(t.shape))

        key = (version(w), tuple((version(a.weight), version(b.weight), sc)
                                 for a, b, sc, _ in fold[1]) if fold else ())
        slot = (id(w), transposed, fold is not None)
        hit = self._packs.get(slot)
        if hit is None or hit[0] != key:
            src = w.detach().t().contiguous() if transposed else w.detach()
            if fold:
                module, adapters = fold
                with torch.no_grad():
                    src = with_lora_delta(src, module, [a for *_, a in adapters])
            self._packs[slot] = hit = (key, torch.ops.mkldnn._reorder_linear_weight(src, 64))
        return hit[1]

    def clear(self):
        self._packs.clear()

    def __len__(self):
        return len(self._packs)

    @contextlib.contextmanager
    def frozen_linears(self, modules):
        """Within: every frozen float32 CPU ``nn.Linear`` among ``modules`` (weight and bias
        without gradients, e.g. the base under a LoRA adapter) computes through the packed
        weights, the backward to its input included. Its forward is put back afterwards."""
        patched = []
        for m in modules:
            if (type(m) is nn.Linear and not m.weight.requires_grad and can_pack(m.weight)
                    and (m.bias is None or not m.bias.requires_grad)):
                w, wt = self.get(m.weight), self.get(m.weight, transposed=True)
                m.forward = functools.partial(_packed_apply, w, wt, m.bias)
                patched.append(m)
        try:
            yield len(patched)
        finally:
            for m in patched:
                del m.forward


class _Linear:
    """``x @ W.T + b`` of one layer as PEFT computes it now (adapters active and not merged
    when the plan is made: plus ``B(A(x)) * scaling``). With ``packs``, one oneDNN-packed
    matrix: W with the LoRA deltas added in (PEFT's ``get_delta_weight``, as the reference
    loop folds them), kept until W, A or B change."""

    def __init__(self, module: nn.Module, packs: PackedWeights | None):
        base = _base_linear(module)
        self.w, self.b, self.lora = base.weight, base.bias, []
        if hasattr(module, "lora_A") and not module.disable_adapters and not module.merged:
            self.lora = [(module.lora_A[a], module.lora_B[a], module.scaling[a], a)
                         for a in module.active_adapters if a in module.lora_A]
        self.packed = None
        if packs is not None:
            self.packed = packs.get(base.weight, fold=(module, self.lora) if self.lora else None)
            self.lora = []

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.b, "none", [], "")
        y = F.linear(x, self.w, self.b)
        for a, b, scaling, _ in self.lora:
            y = y + b(a(x)) * scaling
        return y


class LeanDecoder:
    """Prefill and decode loop over a causal LM's own modules (LoRA adapters included, as PEFT
    computes them). Build with :meth:`for_model`, which says why a model is not supported
    instead of guessing. oneDNN's packed copies of the weights are kept between calls and
    made again only when a weight changed (its version counter or storage)."""

    def __init__(self, lm: nn.Module, packs: PackedWeights | None = None):
        reason = self.unsupported_reason(lm)
        if reason:
            raise ValueError(f"LeanDecoder: {reason}")
        cfg = lm.config
        self.body = getattr(lm, lm.base_model_prefix)
        self.head_module = lm.get_output_embeddings()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scale = self.head_dim ** -0.5
        self.modules = []
        for layer in self.body.layers:
            a, m = layer.self_attn, layer.mlp
            self.modules.append(((a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj,
                                  m.up_proj, m.down_proj),
                                 (layer.input_layernorm, layer.post_attention_layernorm,
                                  m.act_fn)))
        self.packs = packs if packs is not None else PackedWeights()

    @staticmethod
    def unsupported_reason(lm: nn.Module) -> str | None:
        """Why this loop cannot run ``lm`` exactly (None: it can)."""
        cfg = getattr(lm, "config", None)
        kind = getattr(cfg, "model_type", None)
        if kind not in SUPPORTED_MODEL_TYPES:
            return f"model_type {kind!r} is not one of {SUPPORTED_MODEL_TYPES}"
        if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
            return "pretraining_tp > 1"
        if getattr(cfg, "use_sliding_window", False):
            return "sliding-window attention"
        body = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
        if body is None or not hasattr(body, "layers") or not hasattr(body, "rotary_emb"):
            return "no decoder layers / rotary embedding where transformers keeps them"
        if _base_linear(lm.get_output_embeddings()) is None:
            return "the LM head is not a float nn.Linear"
        for i, layer in enumerate(body.layers):
            a, m = layer.self_attn, layer.mlp
            for name, x in (("q_proj", a.q_proj), ("k_proj", a.k_proj), ("v_proj", a.v_proj),
                            ("o_proj", a.o_proj), ("gate_proj", m.gate_proj),
                            ("up_proj", m.up_proj), ("down_proj", m.down_proj)):
                if _base_linear(x) is None:
                    return (f"layer {i} {name} is {type(x).__name__}, not a float nn.Linear "
                            f"(quantised, or an adapter other than LoRA)")
                if getattr(x, "lora_variant", None):
                    return f"layer {i} {name} has a LoRA variant (e.g. DoRA)"
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                if not type(norm).__name__.endswith("RMSNorm"):
                    return f"layer {i} normalises with {type(norm).__name__}, not RMSNorm"
        return None

    @classmethod
    def for_model(cls, lm: nn.Module, packs: PackedWeights | None = None) -> LeanDecoder | None:
        return None if cls.unsupported_reason(lm) else cls(lm, packs)

    # -- the arithmetic of transformers' Llama / Qwen2 layers
    @staticmethod
    def _rms(x: Tensor, norm: nn.Module) -> Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * h.to(x.dtype)

    @staticmethod
    def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    # -- weights
    def plan(self, pack: bool) -> tuple[list, _Linear]:
        """The linear maps as they compute now (adapters on or off, merged or not): per layer
        (q, k, v, o, gate, up, down) and the norms and activation; then the LM head. ``pack``:
        oneDNN's pre-packed weights (CPU float32), 2-4x faster than the plain matrix product
        at decode's few rows (which packs the weight again at every product)."""
        pack = pack and can_pack(_base_linear(self.head_module).weight)

        def make(m):
            return _Linear(m, self.packs if pack else None)

        layers = [tuple(make(m) for m in lins) + rest for lins, rest in self.modules]
        return layers, make(self.head_module)

    # -- the loop
    def prefill(self, layers, head, ids: Tensor, mask: Tensor) -> tuple[list, Tensor]:
        """Keys/values ``[U, kv, P, d]`` (float32) of every layer for the U prompts
        (left-padded) and the logits ``[U, V]`` at their last position."""
        n, length = ids.shape
        kvh, d = self.n_kv, self.head_dim
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        x = self.body.embed_tokens(ids)  # [U, P, C]
        cos, sin = self.body.rotary_emb(x, pos)  # [U, P, d]
        cos, sin = cos[:, None], sin[:, None]
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        # a padding position attends to itself only (its output is never used, kept finite)
        allowed = (causal & mask.bool()[:, None, :]) | torch.eye(length, dtype=torch.bool,
                                                                 device=ids.device)
        allowed = allowed[:, None]  # [U, 1, P, P]
        x = x.reshape(n * length, -1)
        kv = []
        for wq, wk, wv, wo, wg, wu, wd, n_in, n_post, act in layers:
            h = self._rms(x, n_in)
            q = wq(h).view(n, length, -1, d).transpose(1, 2)
            k = self._rope(wk(h).view(n, length, kvh, d).transpose(1, 2), cos, sin)
            v = wv(h).view(n, length, kvh, d).transpose(1, 2)
            q = self._rope(q, cos, sin)
            kf, vf = k.float(), v.float()
            kv.append((kf, vf))
            out = F.scaled_dot_product_attention(q.float(), kf, vf, attn_mask=allowed,
                                                 scale=self.scale, enable_gqa=True)
            x = x + wo(out.to(x.dtype).transpose(1, 2).reshape(n * length, -1))
            h = self._rms(x, n_post)
            x = x + wd(act(wg(h)) * wu(h))
        last = self._rms(x.view(n, length, -1)[:, -1], self.body.norm)
        return kv, head(last)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, first: Tensor, inverse: Tensor,
                 *, temperature: float, top_p: float, max_new_tokens: int,
                 generator: torch.Generator, eos_ids, stop_ids, pad_id: int,
                 compact: bool = True, pack: bool = True, method: str = "cdf"
                 ) -> tuple[Tensor, Tensor]:
        """Tokens and their log-probs ``[N, T]`` for the N prompt rows; ``first``/``inverse``
        (:func:`nudgelib.policies.base.shared_rows`) name the U distinct prompts, prefilled once."""
        dev = prompt_mask.device
        n_rows = inverse.shape[0]
        layers, head = self.plan(pack)
        pk, logits = self.prefill(layers, head, prompt_ids[first], prompt_mask[first])
        dtype = self.body.embed_tokens.weight.dtype
        prompt_pad = ~prompt_mask[first].bool()  # [U, P]
        # row -> (prompt, slot among that prompt's rows): a prompt's rows are its queries
        counts = torch.bincount(inverse, minlength=len(first))
        g_max = int(counts.max())
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot_in = torch.empty_like(inverse)
        slot_in[order] = torch.arange(n_rows, device=dev) - starts[inverse[order]]
        slot = inverse * g_max + slot_in  # [N] place of each row in a [U * g_max] grid
        n_slots = len(first) * g_max

        last = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, -1]
        logits = logits[inverse]
        rows = torch.arange(n_rows, device=dev)  # original index of each live row
        done = torch.zeros(n_rows, dtype=torch.bool, device=dev)
        shape = (n_rows, self.n_kv, max_new_tokens, self.head_dim)
        ck = [torch.empty(shape, dtype=dtype, device=dev) for _ in layers]
        cv = [torch.empty(shape, dtype=dtype, device=dev) for _ in layers]
        toks = torch.full((n_rows, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        logps = torch.zeros((n_rows, max_new_tokens), dtype=torch.float32, device=dev)
        eos = torch.tensor(eos_ids, device=dev)
        stop = torch.tensor(stop_ids, dtype=torch.long, device=dev)
        steps, n_draws = 0, draws_per_row(method, logits.shape[-1])
        for t in range(max_new_tokens):
            u = torch.rand(n_rows, n_draws, generator=generator, dtype=torch.float64).to(dev)
            tok, lp = sample_next(logits, temperature, top_p, generator, uniforms=u[rows],
                                  method=method)
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            toks[rows, t], logps[rows, t] = tok, lp
            steps = t + 1
            done = done | torch.isin(tok, eos)
            if t > 0 and len(stop):
                done = done | torch.isin(tok, stop)
            n_done = int(done.sum())
            if n_done == len(rows) or t == max_new_tokens - 1:
                break
            if compact and n_done and n_done * 8 >= len(rows):
                keep = (~done).nonzero().squeeze(1)
                rows, tok, done = rows[keep], tok[keep], done[keep]
                ck = [c.index_select(0, keep) for c in ck]
                cv = [c.index_select(0, keep) for c in cv]
            logits = self._step(layers, head, tok, last[rows] + 1 + t, t, ck, cv, pk,
                                prompt_pad, slot[rows], n_slots, g_max)
        return toks[:, :steps], logps[:, :steps]

    def _step(self, layers, head, tok, pos, t, ck, cv, pk, prompt_pad, slot, n_slots,
              g_max) -> Tensor:
        n, kvh, d = tok.shape[0], self.n_kv, self.head_dim
        rep = self.n_heads // kvh
        n_prompts = n_slots // g_max
        x = self.body.embed_tokens(tok)  # [n, C]
        cos, sin = self.body.rotary_emb(x[:, None], pos[:, None])  # [n, 1, d]
        cos_q, sin_q = cos[:, :, None], sin[:, :, None]  # broadcast over [n, kv, rep, d]
        pad = prompt_pad[:, None, None, :]  # [U, 1, 1, P]
        for i, (wq, wk, wv, wo, wg, wu, wd, n_in, n_post, act) in enumerate(layers):
            h = self._rms(x, n_in)
            q = self._rope(wq(h).view(n, kvh, rep, d), cos_q, sin_q)
            k = self._rope(wk(h).view(n, kvh, d), cos, sin)
            ck[i][:, :, t] = k
            cv[i][:, :, t] = wv(h).view(n, kvh, d)
            qf = q.float()
            # the prompt's keys: each prompt's live rows are queries [U, kv, g_max * rep, d]
            grid = qf.new_zeros(n_slots, kvh, rep, d)
            grid[slot] = qf
            grid = grid.view(n_prompts, g_max, kvh, rep, d).transpose(1, 2)
            pkey, pval = pk[i]
            s_p = torch.matmul(grid.reshape(n_prompts, kvh, g_max * rep, d),
                               pkey.transpose(-1, -2)) * self.scale
            s_p = s_p.masked_fill(pad, float("-inf"))
            s_p = s_p.view(n_prompts, kvh, g_max, rep, -1).transpose(1, 2)
            s_p = s_p.reshape(n_slots, kvh, rep, -1)[slot]  # [n, kv, rep, P]
            keys, vals = ck[i][:, :, :t + 1].float(), cv[i][:, :, :t + 1].float()
            s_c = torch.matmul(qf, keys.transpose(-1, -2)) * self.scale  # [n, kv, rep, t+1]
            p = torch.softmax(torch.cat([s_p, s_c], -1), dim=-1)
            n_p = s_p.shape[-1]
            out = torch.matmul(p[..., n_p:], vals)
            p_grid = p.new_zeros(n_slots, kvh, rep, n_p)
            p_grid[slot] = p[..., :n_p]
            p_grid = p_grid.view(n_prompts, g_max, kvh, rep, n_p).transpose(1, 2)
            o_p = torch.matmul(p_grid.reshape(n_prompts, kvh, g_max * rep, n_p), pval)
            o_p = o_p.view(n_prompts, kvh, g_max, rep, d).transpose(1, 2)
            out = out + o_p.reshape(n_slots, kvh, rep, d)[slot]
            x = x + wo(out.to(x.dtype).reshape(n, -1))
            h = self._rms(x, n_post)
            x = x + wd(act(wg(h)) * wu(h))
        x = self._rms(x, self.body.norm)
        return head(x)
