"""The language-model policy: a transformers causal LM, optionally LoRA-wrapped, behind the
policy interface of :mod:`nudgelib.policies.base`.

    policy = HFPolicy.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct", lora_rank=16)
    policy = HFPolicy.from_pretrained("offline:smollm2-135m-instruct")   # no hub needed
    samples = policy.sample(["What is 2 + 3?"], group_size=8, max_new_tokens=32, generator=g)

Log-probs are computed from the final hidden states in chunks of positions
(:func:`nudgelib.policies.base.chunked_token_logprobs`), so the float32 full-vocabulary logits of a
whole batch never exist at once; ``bench/logprob_memory.py`` measures the saving.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import Tensor, nn

from nudgelib.policies.base import (
    Policy,
    chunked_token_logprobs,
    draws_per_row,
    lm_switch_defaults,
    sample_next,
    shared_rows,
)
from nudgelib.policies.decode import LeanDecoder, PackedWeights, can_pack, with_lora_delta
from nudgelib.policies.models import load_model_and_tokenizer, quiet_benign_warnings

quiet_benign_warnings()

__all__ = ["DEFAULT_INSTRUCTION", "HFPolicy", "default_dtype", "newline_token_ids", "nf4_config"]


def default_dtype(device: str) -> str:
    """bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on CPU."""
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def nf4_config(dtype: str):
    """bitsandbytes NF4 (double-quantised) for a frozen base computing in ``dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, dtype))



# ----------------------------------------------------------------------------- language models

_NEWLINE_IDS: dict[tuple, tuple[int, ...]] = {}


def newline_token_ids(tokenizer) -> tuple[int, ...]:
    """Ids of every vocabulary token whose text holds a newline (the stop set of
    ``stop_at_newline``). Decoding the whole vocabulary takes 0.3-0.6 s for SmolLM2's 49k
    tokens, so the set is kept per tokenizer (its class, source and vocabulary size: a tokenizer
    given new tokens is decoded again; one built in memory, unnamed, every time)."""
    key = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", None), len(tokenizer))
    if not key[1] or key not in _NEWLINE_IDS:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ids = tuple(i for i, t in enumerate(texts) if "\n" in t)
        if not key[1]:  # built in memory: nothing names it
            return ids
        _NEWLINE_IDS[key] = ids
    return _NEWLINE_IDS[key]


DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class HFPolicy(Policy):
    """A transformers causal LM (optionally LoRA-wrapped) behind the policy interface.

    Prompts are the user's text (question, and hint if any); :meth:`encode_prompts` appends
    ``instruction`` and applies the tokenizer's chat template (plain text when it has none).
    ``stop_at_newline`` ends a completion at its first newline after the first token (a stop
    sequence, for short-answer tasks whose answer is the first line). Sampling is an explicit
    KV-cached loop rather than ``generate()``; on CPU, for Llama-family models, the lean loop
    of :mod:`nudgelib.policies.decode` (``fast_decode``; ``compact_finished`` drops stopped rows), else
    transformers' forward step by step. ``pack_weights`` runs the frozen float32 CPU
    weights through oneDNN's pre-packed copies, in sampling and training. Either loop draws
    with a ``torch.Generator`` (exact, resumable runs) by ``sampler`` (``"race"`` or ``"cdf"``;
    see :func:`nudgelib.policies.base.sample_next`: ``"cdf"``, the
    inverse CDF that was the default before, changes its token under float32 round-off far
    more often) and keeps only the sampled tokens' log-probs (``generate(output_scores=True)``
    would keep N x T x vocab scores). ``sampler``, ``fast_decode`` and ``pack_weights`` left
    at None take :func:`nudgelib.policies.base.lm_switch_defaults` (``race``, on, on, unless the
    environment variables ``NUDGE_SAMPLER``, ``NUDGE_FAST_DECODE``, ``NUDGE_PACK_WEIGHTS``
    say otherwise); :meth:`sampling_info` reports what was resolved, for results files.

    A group's G rows share one prompt, and both passes use that: sampling prefills each
    distinct prompt once and copies its cache to the rows; :meth:`logprobs` runs each distinct
    prompt's forward once (with gradients) and the completions attend to its keys/values, so a
    step computes U x P + N x T positions instead of N x (P + T) (``share_prompts=False``, or
    gradient checkpointing, gives the plain full-sequence forward).
    """

    def __init__(self, model, tokenizer, *, instruction: str = DEFAULT_INSTRUCTION,
                 system_prompt: str | None = None, logprob_chunk_tokens: int | None = None,
                 model_id: str = "", share_prompts: bool = True, merge_for_sampling: bool = True,
                 stop_at_newline: bool = False, fast_decode: bool | None = None,
                 compact_finished: bool = True, pack_weights: bool | None = None,
                 sampler: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        defaults = lm_switch_defaults()
        self.sampler = sampler if sampler is not None else defaults["sampler"]
        draws_per_row(self.sampler, 1)  # names a bad sampler now, not at the first draw
        if fast_decode is None:
            fast_decode = defaults["fast_decode"]
        if pack_weights is None:
            pack_weights = defaults["pack_weights"]
        self.fast_decode, self.compact_finished = fast_decode, compact_finished
        self.pack_weights = pack_weights
        self._decoder, self._lean = False, None  # _decoder False: not built yet
        self._packs = None  # nudgelib.policies.decode.PackedWeights, made at first use
        self.stop_ids = newline_token_ids(tokenizer) if stop_at_newline else ()
        self.share_prompts, self.merge_for_sampling = share_prompts, merge_for_sampling
        self.instruction, self.system_prompt = instruction, system_prompt
        self.logprob_chunk_tokens, self.model_id = logprob_chunk_tokens, model_id
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.eos_ids = tuple(sorted(e for e in eos if e is not None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        cfg = self._causal_lm().config
        if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
            raise NotImplementedError(f"{type(cfg).__name__} rescales its logits (soft-capping "
                                      f"or logit_scale); HFPolicy.logprobs does not model that")

    # -- construction
    @classmethod
    def from_pretrained(cls, model_id: str, *, lora_rank: int = 8, lora_alpha: int | None = None,
                        lora_dropout: float = 0.0, lora_targets: str | list[str] = "all-linear",
                        load_in_4bit: bool = False, dtype: str | None = None,
                        device: str | None = None, gradient_checkpointing: bool = False,
                        **kwargs) -> HFPolicy:
        """Load ``model_id`` (hub id, local path or the offline alias) ready for RL.

        ``lora_rank > 0`` wraps it in a peft LoRA adapter (only the adapter trains);
        ``lora_rank = 0`` trains every weight. ``load_in_4bit`` quantises the frozen base to
        NF4 with bitsandbytes and needs CUDA. Default dtype: bfloat16 on a GPU that supports it,
        float16 on other GPUs, float32 on CPU.
        """

        cuda = torch.cuda.is_available()
        device = device or ("cuda" if cuda else "cpu")
        if device.startswith("cuda") and not cuda:
            raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
        dtype = dtype or default_dtype(device)
        extra = {}
        if load_in_4bit:
            if not device.startswith("cuda"):
                raise ValueError("load_in_4bit=True needs a CUDA GPU (bitsandbytes NF4); set "
                                 "load_in_4bit=False on CPU")
            if lora_rank <= 0:
                raise ValueError("load_in_4bit=True trains through LoRA only; set lora_rank > 0")
            extra["quantization_config"] = nf4_config(dtype)
        model, tok = load_model_and_tokenizer(model_id, dtype=dtype, device=device, **extra)
        model.config.use_cache = False  # training forward passes; sampling passes use_cache
        if lora_rank > 0:
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            if load_in_4bit:
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=gradient_checkpointing)
            model = get_peft_model(model, LoraConfig(
                r=lora_rank, lora_alpha=lora_alpha or 2 * lora_rank, lora_dropout=lora_dropout,
                target_modules=lora_targets, task_type="CAUSAL_LM"))
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # PEFT + checkpointing: the frozen embeddings must still pass gradients on
            model.enable_input_require_grads()
        return cls(model, tok, model_id=str(model_id), **kwargs)

    def sampling_info(self) -> dict:
        """Every switch that decides which tokens are drawn or how the numbers are computed,
        as resolved for this policy (written into results files): the sampler, the decode
        loop actually used (``"lean"``, or ``"transformers"`` when switched off, on a GPU, or
        when the lean loop declines this model), weight packing, prompt sharing."""
        lean = self._lean_decoder() is not None
        return {"policy": type(self).__name__, "sampler": self.sampler,
                "fast_decode": bool(self.fast_decode),
                "decode_loop": "lean" if lean else "transformers",
                "compact_finished": bool(self.compact_finished),
                "pack_weights": bool(self.pack_weights), "share_prompts": bool(self.share_prompts),
                "merge_for_sampling": bool(self.merge_for_sampling),
                "device": str(self.device)}

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    @contextlib.contextmanager
    def _sampling_weights(self):
        """The weights to sample with. The lean loop (:mod:`nudgelib.policies.decode`) folds the LoRA
        deltas into its own packed copies (remade only when a weight changed): nothing to do
        here. Transformers' forward samples with each LoRA delta added into its base weight
        and the adapter switched off: one matmul per layer instead of three plus PEFT's
        bookkeeping (~15% of a CPU sampling step). The original weight tensors are put back
        untouched afterwards (no merge/unmerge round-off). Costs one copy of the adapted
        weights while sampling; skipped for quantised bases and with
        ``merge_for_sampling=False``."""
        self._lean = self._lean_decoder()
        if self._lean is not None:
            try:
                yield
            finally:
                self._lean = None
            return
        layers = []
        if self.is_peft and self.merge_for_sampling:
            from peft.tuners.lora import LoraLayer

            for m in self.model.modules():
                if isinstance(m, LoraLayer) and not getattr(m, "merged", False):
                    if getattr(m, "disable_adapters", False):
                        layers = []  # inside disable_adapter(): the base model, nothing to fold
                        break
                    base = m.get_base_layer()
                    if type(base) is not nn.Linear or not base.weight.is_floating_point():
                        layers = []  # e.g. a 4-bit base: sample through the adapter
                        break
                    layers.append((m, base))
        saved = []
        try:
            with torch.no_grad():
                for m, base in layers:
                    saved.append((base, base.weight.data))
                    base.weight.data = with_lora_delta(
                        base.weight.data, m, [a for a in m.active_adapters if a in m.lora_A])
            if saved:
                with self.model.disable_adapter():
                    yield
            else:
                yield
        finally:
            for base, data in saved:
                base.weight.data = data

    def _lean_decoder(self):
        """The lean loop (:mod:`nudgelib.policies.decode`) when it can run this model exactly, else None
        (transformers' forward samples). CPU only: on a GPU it is untested here."""
        if not self.fast_decode or self.device.type != "cpu":
            return None
        if self.is_peft and not all(str(getattr(c, "peft_type", "")).endswith("LORA")
                                    for c in self.model.peft_config.values()):
            return None
        if self._decoder is False:
            self._decoder = LeanDecoder.for_model(self._causal_lm(), self._packed_weights())
        return self._decoder

    def _packed_weights(self):
        if self._packs is None:
            self._packs = PackedWeights()
        return self._packs

    def _frozen_packed(self):
        """Training passes through oneDNN's packed copies of the frozen base weights (CPU
        float32, ``pack_weights``): the forward and the backward to the activations; the
        adapter's products and everything with a gradient stay as they are. Not with
        gradient checkpointing: it recomputes the forward during the backward, after this
        context has ended (and it is for saving memory, which the packed copies cost)."""

        lm = self._causal_lm()
        if not (self.pack_weights and self.is_peft and not _checkpointing(lm)
                and can_pack(lm.get_output_embeddings().weight)):
            return contextlib.nullcontext(0)
        return self._packed_weights().frozen_linears(lm.modules())

    def _causal_lm(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _modules_for_mode(self):
        return [self.model]

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- text
    def encode_prompts(self, prompts):
        tok, out = self.tokenizer, []
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"prompts must be strings, got {type(p).__name__}")
            text = f"{p}\n{self.instruction}" if self.instruction else p
            if tok.chat_template:
                msgs = ([{"role": "system", "content": self.system_prompt}]
                        if self.system_prompt else []) + [{"role": "user", "content": text}]
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                out.append(tok(text, add_special_tokens=False).input_ids)
            else:
                out.append(tok(text).input_ids)
        return out

    def decode(self, ids, mask):
        rows = [[i for i, m in zip(r, mr) if m] for r, mr in zip(ids.tolist(), mask.tolist())]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    # -- sampling
    def _generate(self, prompt_ids, prompt_mask, *, temperature, top_p, max_new_tokens,
                  generator):
        model = self.model
        # prefill each distinct prompt once, then give every row its own copy of the cache
        if self.share_prompts:
            first, inverse = shared_rows(prompt_ids, prompt_mask)
        else:
            first = inverse = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
        lean = self._lean  # set while sampling (_sampling_weights)
        if lean is not None:
            return lean.generate(prompt_ids, prompt_mask, first, inverse,
                                 temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, generator=generator,
                                 eos_ids=self.eos_ids, stop_ids=self.stop_ids,
                                 pad_id=self.pad_id, compact=self.compact_finished,
                                 pack=self.pack_weights, method=self.sampler)
        pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        cache_arg = _cache_argument(self._causal_lm())
        out = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                    position_ids=pos[first], use_cache=True, logits_to_keep=1)
        past, logits = getattr(out, cache_arg), out.logits[:, -1]
        if len(first) < len(inverse):
            past.batch_select_indices(inverse)
            logits = logits[inverse]
        attn, last = prompt_mask, pos[:, -1]
        eos = torch.tensor(self.eos_ids, device=prompt_ids.device)
        stop = torch.tensor(self.stop_ids, dtype=torch.long, device=prompt_ids.device)
        done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        toks, logps = [], []
        for t in range(max_new_tokens):
            tok, lp = sample_next(logits, temperature, top_p, generator, method=self.sampler)
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            toks.append(tok)
            logps.append(lp)
            done |= torch.isin(tok, eos)
            if t > 0 and len(stop):
                done |= torch.isin(tok, stop)
            if done.all() or t == max_new_tokens - 1:
                break
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
            last = last + 1
            out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=last[:, None],
                        use_cache=True, **{cache_arg: past})
            past, logits = getattr(out, cache_arg), out.logits[:, -1]
        return torch.stack(toks, 1), torch.stack(logps, 1)

    # -- scoring
    def logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                 temperature=1.0):
        with self._frozen_packed():
            return self._logprobs(prompt_ids, prompt_mask, completion_ids, completion_mask,
                                  temperature=temperature)

    def _logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                  temperature=1.0):
        lm = self._causal_lm()
        body = getattr(lm, lm.base_model_prefix)
        mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], 1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        n_prompt = prompt_ids.shape[1]
        share = self.share_prompts and not _checkpointing(lm)
        first, inverse = shared_rows(prompt_ids, prompt_mask) if share else (None, None)
        if share and len(first) < len(inverse):
            # each distinct prompt's forward once (with grad: LoRA acts on the prompt too); its
            # keys/values are indexed out to the rows and the completions attend to them
            out = body(input_ids=prompt_ids[first], attention_mask=prompt_mask[first],
                       position_ids=pos[first, :n_prompt], use_cache=True)
            cache_arg = _cache_argument(body)
            cache = getattr(out, cache_arg)
            cache.batch_select_indices(inverse)
            rest = body(input_ids=completion_ids, attention_mask=mask,
                        position_ids=pos[:, n_prompt:], use_cache=True,
                        **{cache_arg: cache}).last_hidden_state
            h = torch.cat([out.last_hidden_state[inverse, -1:], rest[:, :-1]], 1)
        else:
            ids = torch.cat([prompt_ids, completion_ids], 1)
            h = body(input_ids=ids, attention_mask=mask, position_ids=pos,
                     use_cache=False).last_hidden_state
            h = h[:, n_prompt - 1:-1]
        logp = chunked_token_logprobs(h, completion_ids, lm.get_output_embeddings(),
                                      temperature=temperature,
                                      chunk_tokens=self.logprob_chunk_tokens)
        return logp * completion_mask.to(logp.dtype)

    def reference_logprobs(self, *args, **kwargs) -> Tensor:
        """Log-probs under the frozen base model (the LoRA adapter switched off)."""
        if not self.is_peft:
            raise ValueError("a KL reference needs a LoRA policy (the base model is the "
                             "reference); this policy trains every weight")
        with torch.no_grad(), self.model.disable_adapter():
            return self.logprobs(*args, **kwargs)

    # -- state
    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path):
        """LoRA: the adapter in the standard PEFT format; full fine-tune: the whole model."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def load(self, path):
        path = Path(path)
        if self.is_peft:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            f = path / "adapter_model.safetensors"
            if not f.is_file():
                raise FileNotFoundError(f"no PEFT adapter at {f}")
            res = set_peft_model_state_dict(self.model, load_file(str(f), device=str(self.device)))
            if getattr(res, "unexpected_keys", None):
                raise ValueError(f"adapter at {path} does not match this model: unexpected "
                                 f"keys {res.unexpected_keys[:5]}")
        else:
            from transformers import AutoModelForCausalLM

            src = AutoModelForCausalLM.from_pretrained(path, dtype=self.model.dtype)
            self.model.load_state_dict(src.state_dict())


def _cache_argument(model) -> str:
    """The name ``model.forward`` takes the KV cache under, and its output returns it under:
    ``cache`` from transformers 5.2x (``past_key_values`` still works there but warns), else
    ``past_key_values``."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _checkpointing(lm) -> bool:
    """Whether ``lm`` recomputes activations in the backward (gradient checkpointing)."""
    on = getattr(lm, "is_activation_checkpointing", None)  # transformers >= 5.2x
    return bool(on if on is not None else getattr(lm, "is_gradient_checkpointing", False))
