"""Rewards for RLVR, each usable as a TRL reward function.

TRL calls ``f(prompts, completions, **kwargs) -> list[float]`` with dataset columns as keyword
arguments (the gold answers arrive as e.g. ``answer=[...]``) and, in recent versions,
``completion_ids``. Completions are strings or chat messages. Every function here follows that
contract, so the same objects serve nudgelib's trainer and TRL's GRPOTrainer.

* :func:`correctness_reward` — 1.0 if the final answer verifies against the gold, else 0.0.
* :func:`format_reward` — 1.0 for exactly one well-formed, final ``\\boxed{...}``.
* :func:`overlong_penalty` — DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13).
* :func:`weighted_reward` — a weighted sum of reward functions.

The trainer's scorers turn a batch of completions into (rewards, correct):
:class:`ExactMatchScorer` for the toy tasks, :class:`MathScorer` (the verifier, an optional
format bonus and the overlong penalty) for real math.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nudgelib.tasks.problems import Problem
from nudgelib.tasks.verify import (
    BOXED_RE,
    DEFAULT_STRATEGIES,
    completion_text,
    matching_braces,
    verify_batch,
)

RewardFn = Callable[..., list[float]]


def _named(fn, name: str):
    fn.__name__ = fn.__qualname__ = name  # TRL logs rewards under the function's __name__
    return fn


def make_correctness_reward(answer_key: str = "answer", *, timeout: float = 2.0,
                            workers: int | None = None,
                            strategies: Sequence[str] | None = None) -> RewardFn:
    """A reward that is 1.0 when a completion's answer verifies against ``kwargs[answer_key]``;
    ``strategies`` is how the answer is found (:func:`nudgelib.tasks.verify.extract_answer`; None:
    the verifier's default)."""
    strategies = tuple(strategies or DEFAULT_STRATEGIES)

    def correctness_reward(prompts=None, completions=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        if answer_key not in kwargs:
            raise KeyError(f"correctness_reward needs the gold answers as the keyword argument "
                           f"{answer_key!r} (a dataset column); got {sorted(kwargs)}")
        golds = list(kwargs[answer_key])
        if len(golds) != len(completions):
            raise ValueError(f"{answer_key!r} has {len(golds)} entries for "
                             f"{len(completions)} completions")
        res = verify_batch(golds, completions, timeout=timeout, workers=workers,
                           strategies=strategies)
        return [1.0 if r.correct else 0.0 for r in res]

    return _named(correctness_reward, "correctness_reward")


correctness_reward = make_correctness_reward()


def make_format_reward(max_trailing_chars: int = 40) -> RewardFn:
    """1.0 for exactly one ``\\boxed{...}`` that is well formed, non-empty and final.

    "Final" means at most ``max_trailing_chars`` characters follow its closing brace (room for
    "$." or a closing sentence, not for more working).
    """

    def format_reward(prompts=None, completions=None, **kwargs) -> list[float]:
        out = []
        for c in completions or []:
            text = completion_text(c)
            hits = list(BOXED_RE.finditer(text))
            ok = False
            if len(hits) == 1 and hits[0].group(1) is not None:
                close = matching_braces(text).get(hits[0].start(1))
                ok = (close is not None and text[hits[0].end(1):close].strip() != ""
                      and len(text) - close - 1 <= max_trailing_chars)
            out.append(1.0 if ok else 0.0)
        return out

    return _named(format_reward, "format_reward")


format_reward = make_format_reward()


def soft_overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO eq. 13: 0 if L <= Lmax - Lcache; (Lmax - Lcache - L) / Lcache up to Lmax; -1 beyond."""
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, "
                         f"max_len={max_len}")
    if length <= max_len - cache_len:
        return 0.0
    if length <= max_len:
        return (max_len - cache_len - length) / cache_len
    return -1.0


def overlong_penalty(max_len: int, cache_len: int, tokenizer=None) -> RewardFn:
    """DAPO's soft overlong punishment as a reward function.

    Lengths are in tokens, taken from ``completion_ids`` (TRL passes it), else from
    ``completion_lengths``, else by tokenising with ``tokenizer``.
    """
    soft_overlong_penalty(0, max_len, cache_len)  # validate now, not at the first call

    def overlong_reward(prompts=None, completions=None, **kwargs) -> list[float]:
        if "completion_ids" in kwargs:
            lengths = [len(ids) for ids in kwargs["completion_ids"]]
        elif "completion_lengths" in kwargs:
            lengths = [int(n) for n in kwargs["completion_lengths"]]
        elif tokenizer is not None:
            lengths = [len(tokenizer(completion_text(c), add_special_tokens=False)["input_ids"])
                       for c in completions or []]
        else:
            raise ValueError("overlong_penalty needs token lengths: pass completion_ids or "
                             "completion_lengths, or build it with tokenizer=...")
        return [soft_overlong_penalty(n, max_len, cache_len) for n in lengths]

    return _named(overlong_reward, "overlong_penalty")


def weighted_reward(components: Sequence[tuple[RewardFn, float]],
                    name: str = "weighted_reward") -> RewardFn:
    """sum_k w_k * f_k(prompts, completions, **kwargs) over ``components = [(f, w), ...]``."""
    components = list(components)
    if not components:
        raise ValueError("weighted_reward needs at least one (reward_fn, weight) pair")
    for i, item in enumerate(components):
        if not (isinstance(item, tuple) and len(item) == 2 and callable(item[0])
                and isinstance(item[1], (int, float))):
            raise TypeError(f"components[{i}] must be (reward_fn, weight), got {item!r}")

    def combined(prompts=None, completions=None, **kwargs) -> list[float]:
        total = [0.0] * len(completions or [])
        for fn, w in components:
            vals = fn(prompts, completions, **kwargs)
            if len(vals) != len(total):
                raise ValueError(f"{getattr(fn, '__name__', fn)} returned {len(vals)} rewards "
                                 f"for {len(total)} completions")
            total = [t + w * v for t, v in zip(total, vals)]
        return total

    return _named(combined, re.sub(r"\W", "_", name))


def reward_table(completions: Sequence, golds: Sequence, components: dict[str, RewardFn],
                 **kwargs):
    """A pandas DataFrame: one row per completion, one column per reward (for notebooks)."""
    import pandas as pd

    cols = {name: fn(None, list(completions), answer=list(golds), **kwargs)
            for name, fn in components.items()}
    df = pd.DataFrame({"completion": [completion_text(c)[:60] for c in completions],
                       "gold": list(golds), **cols})
    return df


# ----------------------------------------------------------------------------- scoring

class ExactMatchScorer:
    """Toy verifier: reward 1 when the stripped completion equals the gold answer string."""

    name = "exact_match"

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str],
                 lengths: Sequence[int], truncated: Sequence[bool]):
        correct = [c.strip() == p.answer for p, c in zip(problems, completions)]
        return [float(c) for c in correct], correct


@dataclass
class MathScorer:
    """reward = correct + format_weight * well-formed boxed answer + overlong_weight * DAPO penalty.

    ``correct`` comes from :func:`nudgelib.tasks.verify.verify_batch` (math-verify behind a fast
    exact path, each check bounded by ``timeout`` seconds), the answer found by the extraction
    ``strategies`` (None: the verifier's default; ``("boxed", "short")`` for short answers). The overlong penalty (DAPO,
    arXiv 2503.14476 eq. 13) is 0 up to ``max_len - cache_len`` tokens, falls linearly to -1
    at ``max_len`` and is -1 for a truncated completion; it is off when ``max_len`` is None.
    """

    format_weight: float = 0.0
    overlong_weight: float = 0.0
    max_len: int | None = None
    cache_len: int | None = None
    timeout: float = 2.0
    name: str = "math"
    strategies: tuple | None = None

    def __call__(self, problems, completions, lengths, truncated):
        res = verify_batch([p.answer for p in problems], list(completions), timeout=self.timeout,
                           strategies=self.strategies or DEFAULT_STRATEGIES)
        correct = [r.correct for r in res]
        rewards = [float(c) for c in correct]
        if self.format_weight:
            fmt = format_reward(None, list(completions))
            rewards = [r + self.format_weight * f for r, f in zip(rewards, fmt)]
        if self.overlong_weight and self.max_len:
            cache = self.cache_len or max(1, self.max_len // 4)
            pen = [-1.0 if t else soft_overlong_penalty(n, self.max_len, cache)
                   for n, t in zip(lengths, truncated)]
            rewards = [r + self.overlong_weight * p for r, p in zip(rewards, pen)]
        return rewards, correct
