"""Policies: one interface from a toy table to a LoRA language model.

Every policy turns prompts (strings) into G completions each and scores given completions:

    samples = policy.sample(prompts, group_size=8, temperature=1.0, top_p=1.0,
                            max_new_tokens=64, generator=gen)
    logp = policy.logprobs(samples.prompt_ids, samples.prompt_mask,
                           samples.completion_ids, samples.completion_mask)

``Samples`` holds left-padded prompt ids, right-padded completion ids, the completion mask and
the per-token log-probs at sampling time. The mask is made **by position**: it is 1 up to and
including the first end-of-sequence token and 0 after it. Many tokenizers use the EOS token as
padding; masking "every pad token" would then also mask the real EOS, and the model would
never be rewarded for stopping (docs/method.md §6).

Sampling log-probs are log-softmax(logits / temperature) at the sampled token, i.e. what
:meth:`Policy.logprobs` returns for the same completion at the same temperature (top-p only
chooses which tokens may be drawn; it does not change the scored distribution, as in TRL).

Implementations:

* :class:`nudgelib.toy.CategoricalPolicy` — the toy table behind this interface;
* :class:`nudgelib.policies.char.CharTransformerPolicy` — a tiny character-level transformer
  trained from scratch, warm-started with supervised learning on easy problems;
* :class:`nudgelib.policies.hf.HFPolicy` — any causal LM from transformers (hub id or local
  path), chat template, LoRA via peft, 4-bit base via bitsandbytes on CUDA, gradient
  checkpointing (its own module: it is the only policy that needs transformers and peft).

Log-probs of a language model are computed from the final hidden states in chunks of
positions (:func:`chunked_token_logprobs`), so the float32 full-vocabulary logits of the whole
batch never exist at once; ``bench/logprob_memory.py`` measures the saving.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from nudgelib.presets import env_choice, env_flag

__all__ = ["Policy", "Samples", "chunked_token_logprobs", "completion_mask", "left_pad",
           "right_pad", "sample_next"]


# ----------------------------------------------------------------------------- helpers

def completion_mask(ids: Tensor, eos_ids: Sequence[int],
                    stop_ids: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """Mask [N, T] (1 up to and including the first EOS) and ``truncated`` [N] (no EOS at all).

    By position, not by token id: with pad == eos the real EOS stays inside the mask. A token of
    ``stop_ids`` (a stop sequence, e.g. any token holding a newline) ends the completion like an
    EOS, except as its very first token.
    """
    is_eos = torch.zeros_like(ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= ids == e
    if len(stop_ids):
        is_stop = torch.isin(ids, torch.as_tensor(list(stop_ids), device=ids.device))
        is_stop[:, :1] = False
        is_eos |= is_stop
    # number of EOS tokens strictly before position t: 0 means "still inside the completion"
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (before == 0).float()
    return mask, ~is_eos.any(dim=1)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad lists of ids to [N, L]; returns (ids, mask)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def right_pad(t: Tensor, width: int, value) -> Tensor:
    """Pad [N, T] on the right to [N, width]."""
    if t.shape[1] >= width:
        return t
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Zero out the tail of each row beyond cumulative probability ``top_p`` (nucleus)."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # keep a token if the mass strictly before it is < top_p (always keeps the top token)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs * keep


def _check_sampling(group_size: int, temperature: float, top_p: float, max_new_tokens: int):
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")


def shared_rows(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows that repeat: ``first`` [U] (first row of each distinct (ids, mask) row, in order of
    appearance) and ``inverse`` [N] (which of them each row is), so ``ids[first][inverse] ==
    ids``. A group's G completions share one prompt row."""
    key = torch.cat([ids * mask, mask], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    n = inverse.shape[0]
    first = torch.full((int(inverse.max()) + 1 if n else 0,), n, dtype=torch.long,
                       device=ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=ids.device), "amin")
    order = torch.argsort(first)  # number the distinct rows by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=ids.device)
    return first[order], rank[inverse]


LOGITS_KEEP_BYTES = 512 * 2**20
"""Up to this many bytes of float32 logits, training keeps them instead of recomputing."""


def _chunk_logp(h: Tensor, targets: Tensor, head: nn.Module, temperature: float) -> Tensor:
    logits = head(h).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_token_logprobs(hidden: Tensor, targets: Tensor, head: nn.Module, *,
                           temperature: float = 1.0, chunk_tokens: int | None = None,
                           checkpoint: bool | None = None) -> Tensor:
    """log softmax(head(hidden) / T)[target] per position, [N, L] float32, chunk by chunk.

    Only ``chunk_tokens`` positions' logits exist at a time. Under autograd each chunk is
    checkpointed (``torch.utils.checkpoint``): the backward pass recomputes the chunk's logits
    instead of keeping them, so training memory is also one chunk, not N x L x vocab.
    Default chunk: 2**24 / vocab positions (64 MB of float32 logits). ``checkpoint=None``
    checkpoints only when all positions' logits would exceed :data:`LOGITS_KEEP_BYTES`: below
    that, keeping them is cheaper than computing the LM head a third time in the backward.
    """
    n, length, dim = hidden.shape
    if targets.shape != (n, length):
        raise ValueError(f"targets must be [{n}, {length}], got {tuple(targets.shape)}")
    vocab = head.weight.shape[0] if hasattr(head, "weight") else head.out_features
    chunk = chunk_tokens or max(16, 2**24 // vocab)
    h, t = hidden.reshape(-1, dim), targets.reshape(-1)
    pieces = []
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(
        p.requires_grad for p in head.parameters()))
    if checkpoint is None:
        checkpoint = h.shape[0] * vocab * 4 > LOGITS_KEEP_BYTES
    for i in range(0, h.shape[0], chunk):
        hi, ti = h[i:i + chunk], t[i:i + chunk]
        if grad and checkpoint:
            pieces.append(torch.utils.checkpoint.checkpoint(
                _chunk_logp, hi, ti, head, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logp(hi, ti, head, temperature))
    if not pieces:
        return hidden.new_zeros((n, length), dtype=torch.float32)
    return torch.cat(pieces).reshape(n, length)


@dataclass
class Samples:
    """G completions for each prompt, flattened to N = prompts x G rows (prompt-major).

    ``prompt_ids``/``prompt_mask`` [N, P] are left-padded; ``completion_ids`` [N, T] are
    right-padded with the pad id after the first EOS; ``completion_mask`` [N, T] is 1 up to and
    including that EOS; ``logp`` [N, T] are the sampling log-probs (0 where masked);
    ``truncated`` [N] marks completions that hit ``max_new_tokens`` without an EOS.
    """

    prompts: list[str]
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    logp: Tensor
    truncated: Tensor
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1).long()


# ----------------------------------------------------------------------------- interface

class Policy(ABC):
    """What the trainer, rollouts and evaluation need from a policy."""

    eos_ids: tuple[int, ...]
    pad_id: int
    stop_ids: tuple[int, ...] = ()  # tokens that end a completion after its first token

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as the model sees it (chat template applied, if any)."""

    @abstractmethod
    def decode(self, ids: Tensor, mask: Tensor) -> list[str]:
        """Text of each completion row (masked tokens dropped, EOS not shown)."""

    @abstractmethod
    def _generate(self, prompt_ids: Tensor, prompt_mask: Tensor, *, temperature: float,
                  top_p: float, max_new_tokens: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sample completion ids [N, T<=max_new_tokens] and sampling log-probs [N, T]."""

    @abstractmethod
    def logprobs(self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                 completion_mask: Tensor, *, temperature: float = 1.0) -> Tensor:
        """Per-token log-probs [N, T] of the completions under the prompts (grad-enabled)."""

    @abstractmethod
    def trainable_parameters(self) -> list[nn.Parameter]: ...

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the trainable state to the folder ``path``."""

    @abstractmethod
    def load(self, path: str | Path) -> None:
        """Read back what :meth:`save` wrote (into this already constructed policy)."""

    def train_mode(self, on: bool = True) -> None:
        for m in self._modules_for_mode():
            m.train(on)

    def _modules_for_mode(self) -> list[nn.Module]:
        return []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def sampling_info(self) -> dict:
        """The switches that decide which tokens this policy draws, as resolved (results files
        record them): at least the policy's class and its sampler."""
        return {"policy": type(self).__name__, "sampler": getattr(self, "sampler", "cdf"),
                "device": str(self.device)}

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], group_size: int = 1, *, temperature: float = 1.0,
               top_p: float = 1.0, max_new_tokens: int = 64,
               generator: torch.Generator | None = None) -> Samples:
        """``group_size`` completions per prompt (rows prompt-major: p0 x G, p1 x G, ...)."""
        _check_sampling(group_size, temperature, top_p, max_new_tokens)
        prompts = list(prompts)
        if not prompts:
            raise ValueError("sample() needs at least one prompt")
        encoded = self.encode_prompts(prompts)
        rows = [ids for ids in encoded for _ in range(group_size)]
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(self.device), prompt_mask.to(self.device)
        generator = generator or torch.Generator(device="cpu").manual_seed(0)
        was_training = self._training_flag()
        self.train_mode(False)
        try:
            with self._sampling_weights():
                ids, logp = self._generate(prompt_ids, prompt_mask, temperature=temperature,
                                           top_p=top_p, max_new_tokens=max_new_tokens,
                                           generator=generator)
        finally:
            self.train_mode(was_training)
        mask, truncated = completion_mask(ids, self.eos_ids, self.stop_ids)
        ids = torch.where(mask.bool(), ids, torch.full_like(ids, self.pad_id))
        logp = logp.float() * mask
        return Samples(prompts=[p for p in prompts for _ in range(group_size)],
                       prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=ids,
                       completion_mask=mask, logp=logp, truncated=truncated,
                       texts=self.decode(ids, mask))

    def _sampling_weights(self):
        """A context in which the policy samples (HFPolicy: LoRA folded into the weights)."""
        return contextlib.nullcontext()

    def _training_flag(self) -> bool:
        mods = self._modules_for_mode()
        return bool(mods and mods[0].training)


SAMPLERS = ("cdf", "race")
SAMPLER_ENV, FAST_DECODE_ENV, PACK_WEIGHTS_ENV = (
    "NUDGE_SAMPLER", "NUDGE_FAST_DECODE", "NUDGE_PACK_WEIGHTS")


def lm_switch_defaults() -> dict:
    """The language-model policy's defaults for the switches that change sampled tokens or
    numerics: ``sampler`` ``"race"``, ``fast_decode`` and ``pack_weights`` on, each overridden
    by its environment variable (``NUDGE_SAMPLER=cdf``, ``NUDGE_FAST_DECODE=0``,
    ``NUDGE_PACK_WEIGHTS=off``...), parsed strictly: a value that is not a sampler name or a
    boolean is an error naming the variable."""
    return {"sampler": env_choice(SAMPLER_ENV, SAMPLERS, "race"),
            "fast_decode": env_flag(FAST_DECODE_ENV, True),
            "pack_weights": env_flag(PACK_WEIGHTS_ENV, True)}


def race_blocks(vocab: int) -> tuple[int, int]:
    """(blocks, block size) of :func:`race_categorical`'s two-level race: ~sqrt(vocab) each."""
    size = math.isqrt(max(vocab - 1, 0)) + 1
    return -(-vocab // size), size


def draws_per_row(method: str, vocab: int) -> int:
    """Uniform numbers :func:`sample_next` takes per row and draw: ``cdf`` one; ``race`` one
    per block and one per position in a block (:func:`race_blocks`)."""
    if method not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {method!r}")
    return 1 if method == "cdf" else sum(race_blocks(vocab))


def sample_next(logits: Tensor, temperature: float, top_p: float,
                 generator: torch.Generator, *, uniforms: Tensor | None = None,
                 method: str = "cdf") -> tuple[Tensor, Tensor]:
    """Draw one token per row from softmax(logits / T) restricted to the top-p nucleus.

    ``method``: ``"cdf"`` (:func:`sample_categorical`: inverse CDF in vocabulary order; the
    default here, so the toy policies' small vocabularies draw as they always did) or
    ``"race"`` (:func:`race_categorical`: the same distribution, drawn so that float32
    round-off in the logits almost never changes the token; ``HFPolicy``'s default).
    ``uniforms`` ``[rows, draws_per_row(method, vocab)]`` (float64, drawn by the caller from
    ``generator``) replaces the draw: a loop that drops finished rows still draws for every
    row, so the live rows get the same numbers."""
    logits = logits.float()
    if temperature != 1.0:  # x / 1.0 is x: skip a pass over [rows, vocab]
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    if method == "race":
        logw = logp_all
        if top_p < 1.0:
            keep = top_p_filter(logp_all.exp(), top_p) > 0
            logw = logp_all.masked_fill(~keep, -math.inf)
        tok = race_categorical(logw, generator, uniforms=uniforms)
    else:
        draws_per_row(method, logits.shape[-1])  # names a bad method
        probs = top_p_filter(logp_all.exp(), top_p)
        tok = sample_categorical(probs, generator, uniforms=uniforms)
    return tok, logp_all.gather(-1, tok[:, None]).squeeze(-1)


def race_categorical(logw: Tensor, generator: torch.Generator, *,
                     uniforms: Tensor | None = None) -> Tensor:
    """One index per row, drawn with probability ``exp(logw[i]) / sum(exp(logw))``
    (``-inf``: never drawn), robust to round-off in ``logw``.

    Inverse-CDF sampling in vocabulary order moves the boundary of every token after one whose
    probability changed, so round-off of ~1e-6 in each of 49k probabilities changes a draw
    about once in 700 (``bench/decode_exactness.py``). Here the draw is an exponential race
    (Gumbel-max: the argmax of ``log w - log E`` with E ~ Exp(1)), which changes only when the
    two best scores are within round-off of each other. It runs in two levels so that it needs
    ~2 sqrt(vocab) numbers instead of vocab: the vocabulary in token-id order is cut into
    blocks (:func:`race_blocks`), a block is drawn by racing the blocks' masses, then a token
    by racing the block's weights. P(block) x P(token | block) = the token's probability, and
    every number belongs to a fixed block or position, so no reordering of probabilities
    swaps them.
    """
    rows, vocab = logw.shape
    n_blocks, size = race_blocks(vocab)
    u = uniforms if uniforms is not None else torch.rand(
        rows, n_blocks + size, generator=generator, dtype=torch.float64)
    log_e = (-torch.log1p(-u.to(logw.device))).clamp(min=1e-300).log()  # log E, E ~ Exp(1)
    w = (logw - logw.max(-1, keepdim=True).values).exp()  # float32, 0 for -inf
    w = torch.nn.functional.pad(w, (0, n_blocks * size - vocab)).view(rows, n_blocks, size)
    block = (w.sum(-1).double().log() - log_e[:, :n_blocks]).argmax(-1)
    inner = w[torch.arange(rows, device=w.device), block].double()
    return block * size + (inner.log() - log_e[:, n_blocks:]).argmax(-1)


def sample_categorical(probs: Tensor, generator: torch.Generator, *,
                       uniforms: Tensor | None = None) -> Tensor:
    """One index per row, drawn with probability ``probs[i] / probs.sum()``, by inverse CDF.

    One uniform number per row from ``generator`` (an explicit CPU generator keeps runs
    reproducible and resumable), against a float64 cumulative sum. ``torch.multinomial`` draws
    one exponential per vocabulary entry instead, which took ~20% of a sampling step for a
    49k-token vocabulary. A zero-probability entry is never drawn. ``uniforms`` ``[rows, 1]``
    (float64, drawn by the caller from ``generator``) replaces the draw: a loop that drops
    finished rows still draws for every row, so the live rows get the same numbers.
    """
    cdf = probs.double().cumsum(-1)
    u = uniforms if uniforms is not None else torch.rand(
        probs.shape[0], 1, generator=generator, dtype=torch.float64)
    u = u.to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


# ----------------------------------------------------------------------------- module policies

class ModulePolicy(Policy):
    """A policy whose whole state is one ``nn.Module`` in ``self.net`` (saved as a state dict)."""

    net: nn.Module

    def _modules_for_mode(self):
        return [self.net]

    def trainable_parameters(self):
        return [p for p in self.net.parameters() if p.requires_grad]

    def save(self, path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), path / "policy.pt")

    def load(self, path):
        self.net.load_state_dict(torch.load(Path(path) / "policy.pt", weights_only=True))
