"""A toy policy that trains in seconds: the GRPO family without a language model.

The task: P problems share K candidate answers; problem p's correct answer is ``answer[p]``.
A completion is a short token sequence:

    [answer token] [more] [more] ... [end]

The policy (``ToyPolicy``) has

* answer logits ``bias[p, k] + shared_scale * (features[p] @ W)[k]``: a per-problem table plus
  a map ``W`` shared by all problems, so learning on one problem can move another
  (``shared_scale = 0`` switches the coupling off);
* a continue logit ``cont[p, k]`` per (problem, answer): after the answer each position says
  "more" with probability sigmoid(cont) or "end", up to ``max_len`` tokens. Length carries no
  reward, which is what makes the length bias of an aggregation visible.

Difficulty is set by the initial bias of the correct answer (``ToyTask.make``): an easy problem
starts near 45% pass rate, a hard one near 0.1% — so at G = 8 hard groups are almost always 0/G
and give GRPO no gradient.

``train_toy`` runs sample -> reward -> advantages -> policy_loss -> Adam with any estimator x
surrogate x aggregation and returns the per-step metrics as a pandas DataFrame.

:func:`toy_problems` exposes the table task as problems with prompts ``"p<index>"``, verified
by exact match (:class:`nudgelib.tasks.rewards.ExactMatchScorer`); :class:`CategoricalPolicy`
puts the table behind the policy interface the trainer uses. The second toy family, addition
for the tiny character-level transformer, lives in :mod:`nudgelib.tasks.addition`;
:func:`toy_hint` serves the built-in hints of both.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nudgelib.core.advantages import compute_advantages
from nudgelib.core.losses import policy_loss
from nudgelib.hints.bank import CONTEXT_TYPES, HINT_TYPES
from nudgelib.policies.base import ModulePolicy, left_pad
from nudgelib.tasks.addition import DIFFICULTY_LEVEL, addition_hint_text
from nudgelib.tasks.problems import Problem

DIFFICULTY_BIAS = {"easy": 2.0, "medium": -0.5, "hard": -5.0}
"""Initial logit of the correct answer, against 0 for the K-1 others."""


@dataclass
class ToyTask:
    """Problems: features [P, d], correct answer [P], difficulty label per problem."""

    features: Tensor
    answer: Tensor
    difficulty: list[str]
    n_answers: int
    offset: Tensor | None = None  # [P] initial logit of the correct answer; None: by difficulty

    def __post_init__(self):
        if self.offset is None:
            self.offset = torch.tensor([DIFFICULTY_BIAS[d] for d in self.difficulty])

    @property
    def n_problems(self) -> int:
        return self.features.shape[0]

    @classmethod
    def make(cls, counts: dict[str, int] | None = None, *, n_answers: int = 10, dim: int = 8,
             seed: int = 0, skills: str = "shared", hard_spread: float = 0.0) -> ToyTask:
        """``counts`` problems per difficulty, e.g. {"easy": 8, "medium": 8, "hard": 8}.

        ``skills`` says what the shared map ``W`` can carry from one difficulty to another:

        * ``"shared"`` — every problem's features use all ``dim`` dimensions, so what GRPO
          learns on easy problems also moves the hard ones;
        * ``"split"`` — hard problems use only the last ``dim // 2`` feature dimensions and the
          others only the first half: the hard problems need a skill (those rows of ``W``) that
          no easy problem exercises, like a reasoning step a model never gets right unaided.
          Learning on some hard problems still transfers to other (held-out) hard ones.

        ``hard_spread`` > 0 draws each hard problem's initial correct-answer logit uniformly
        from ``-5 ± hard_spread`` instead of exactly -5, so some hard problems are within the
        base policy's reach at k = 1024 samples and others are not.
        """
        counts = counts or {"easy": 8, "medium": 8, "hard": 8}
        if skills not in ("shared", "split"):
            raise ValueError(f"skills={skills!r}; expected 'shared' or 'split'")
        if skills == "split" and dim < 2:
            raise ValueError(f"skills='split' needs dim >= 2, got dim={dim}")
        if not hard_spread >= 0:
            raise ValueError(f"hard_spread must be >= 0, got {hard_spread}")
        unknown = set(counts) - set(DIFFICULTY_BIAS)
        if unknown:
            raise ValueError(f"unknown difficulty {sorted(unknown)}; expected some of "
                             f"{sorted(DIFFICULTY_BIAS)}")
        if n_answers < 2:
            raise ValueError(f"n_answers must be >= 2, got {n_answers}")
        g = torch.Generator().manual_seed(seed)
        labels = [d for d, n in counts.items() for _ in range(n)]
        hard = torch.tensor([d == "hard" for d in labels], dtype=torch.bool)
        feats = torch.randn(len(labels), dim, generator=g)
        if skills == "split":
            half = dim // 2
            feats[hard, :dim - half] = 0.0
            feats[~hard, dim - half:] = 0.0
        teacher = torch.randn(dim, n_answers, generator=g)
        task = cls(features=feats, answer=(feats @ teacher).argmax(-1), difficulty=labels,
                   n_answers=n_answers)  # offset: DIFFICULTY_BIAS of each label
        if hard_spread:
            u = torch.rand(int(hard.sum()), generator=g) * 2 - 1
            task.offset[hard] += hard_spread * u
        return task

    def mask_of(self, difficulty: str) -> Tensor:
        return torch.tensor([d == difficulty for d in self.difficulty])


@dataclass
class ToyBatch:
    """G completions for each of some problems, flattened to N = problems x G rows."""

    problem: Tensor  # [N] problem index
    group: Tensor  # [N] group id (one per prompt in the batch)
    answer: Tensor  # [N] sampled answer
    n_more: Tensor  # [N] number of "more" tokens
    stopped: Tensor  # [N] bool: ended with "end" within max_len
    reward: Tensor  # [N]
    old_logp: Tensor  # [N, max_len] per-token log-probs at sampling time
    mask: Tensor  # [N, max_len]

    @property
    def length(self) -> Tensor:
        return self.mask.sum(-1)


HINT_READING_STEPS = 200
"""Supervised steps that teach a new ToyPolicy to read hints (:meth:`ToyPolicy.learn_to_read_hints`)."""


_HINT_READING: dict[tuple, Tensor] = {}


class ToyPolicy(torch.nn.Module):
    def __init__(self, task: ToyTask, *, shared_scale: float = 1.0, init_continue: float = 0.5,
                 max_len: int = 12, train_table: bool = True,
                 hint_reading_steps: int = HINT_READING_STEPS, hint_seed: int = 0):
        """``train_table=False`` freezes the per-problem table ``bias``: the policy can then only
        learn through the shared map ``W``, so everything it learns on one problem is a skill
        that also applies to unseen problems with the same features (no memorisation).

        A hint (:func:`toy_table_hint`) is part of the policy's input: a set of hint tokens
        (:func:`toy_hint_tokens`) whose rows of the learned table ``U`` [H, K] are added to the
        answer logits. Nothing is hand-set: ``U`` starts at 0 and is learned, first by
        ``hint_reading_steps`` of supervised "pre-training" on random problems of its own
        (:meth:`learn_to_read_hints`, the way a language model has learned to read hints
        before RL), then by RL with everything else. With ``hint_reading_steps=0`` hints do
        nothing until RL teaches them.
        """
        super().__init__()
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (answer + end), got {max_len}")
        self.task, self.shared_scale, self.max_len = task, shared_scale, max_len
        bias = torch.zeros(task.n_problems, task.n_answers)
        bias[torch.arange(task.n_problems), task.answer] = task.offset.to(bias.dtype)
        self.bias = torch.nn.Parameter(bias, requires_grad=train_table)
        self.W = torch.nn.Parameter(torch.zeros(task.features.shape[1], task.n_answers))
        self.cont = torch.nn.Parameter(torch.full((task.n_problems, task.n_answers),
                                                  float(init_continue)))
        self.U = torch.nn.Parameter(torch.zeros(hint_vocab_size(task.n_answers), task.n_answers))
        if hint_reading_steps:
            key = (task.n_answers, hint_reading_steps, hint_seed)
            if key not in _HINT_READING:  # deterministic: learned once per process
                self.learn_to_read_hints(hint_reading_steps, seed=hint_seed)
                _HINT_READING[key] = self.U.detach().clone()
            with torch.no_grad():
                self.U.copy_(_HINT_READING[key])

    def answer_logits(self, problems: Tensor, hints: Tensor | None = None) -> Tensor:
        """Logits [N, K]; ``hints`` [N, H] is the multi-hot of each row's hint tokens (0 rows:
        no hint), which adds ``hints @ U``."""
        logits = self.bias[problems] + self.shared_scale * (self.task.features[problems] @ self.W)
        return logits if hints is None else logits + hints @ self.U

    def learn_to_read_hints(self, steps: int, *, seed: int = 0, batch_size: int = 256,
                            lr: float = 0.05) -> list[float]:
        """Supervised pre-training of the hint table ``U`` alone, on random problems that are
        not the task's: K random logits with the correct answer's raised by U(-5, 2) (from
        hard to easy), one hint of a random built-in type (answer, family, 5 or 3 wrong
        answers excluded), loss -log p(correct | logits + hint). Returns the losses."""
        K = self.task.n_answers
        g = torch.Generator().manual_seed(1_000_033 + seed)
        opt = torch.optim.Adam([self.U], lr=lr)
        rows = torch.arange(batch_size)
        losses = []
        for _ in range(steps):
            a = torch.randint(0, K, (batch_size,), generator=g)
            z = 0.5 * torch.randn(batch_size, K, generator=g)
            z[rows, a] += torch.rand(batch_size, generator=g) * 7 - 5
            x = torch.zeros(batch_size, self.U.shape[0])
            kind = torch.randint(0, 4, (batch_size,), generator=g)
            x[rows[kind == 0], a[kind == 0]] = 1  # answer a
            x[rows[kind == 1], 2 * K + a[kind == 1] // 2] = 1  # family of a
            r = torch.rand(batch_size, K, generator=g)
            r[rows, a] = 2.0  # never excluded
            order = r.argsort(-1)
            for k, m in enumerate(TABLE_HINT_EXCLUDED.values(), start=2):  # m wrong answers
                sel = rows[kind == k]
                if len(sel):
                    x[sel[:, None], K + order[sel, :min(m, K - 1)]] = 1
            lp = torch.log_softmax(z + x @ self.U, -1)[rows, a]
            loss = -lp.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    def pass_rate(self, problems: Tensor | None = None, hints: Tensor | None = None) -> Tensor:
        """Exact probability that one sample answers each of ``problems`` (default: all [P])
        correctly, under ``hints`` [N, H] (default: none)."""
        problems = torch.arange(self.task.n_problems) if problems is None else problems
        with torch.no_grad():
            probs = torch.softmax(self.answer_logits(problems, hints), -1)
            return probs.gather(-1, self.task.answer[problems][:, None]).squeeze(-1)

    def token_logp(self, problem: Tensor, answer: Tensor, n_more: Tensor,
                   stopped: Tensor, hints: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-token log-probs [N, max_len] and mask of the given completions."""
        logits = self.answer_logits(problem, hints)
        lp_answer = torch.log_softmax(logits, -1).gather(-1, answer[:, None]).squeeze(-1)
        c = self.cont[problem, answer]
        lp_more, lp_end = torch.nn.functional.logsigmoid(c), torch.nn.functional.logsigmoid(-c)
        t = torch.arange(1, self.max_len)[None, :]
        n = n_more[:, None]
        is_more = t <= n
        is_end = (t == n + 1) & stopped[:, None]
        rest = torch.where(is_more, lp_more[:, None], torch.where(is_end, lp_end[:, None], 0.0))
        logp = torch.cat([lp_answer[:, None], rest], dim=1)
        mask = torch.cat([torch.ones_like(n, dtype=torch.bool), is_more | is_end], 1)
        return logp, mask.to(logp.dtype)

    @torch.no_grad()
    def sample(self, problems: Tensor, group_size: int, generator: torch.Generator,
               hints: Tensor | None = None) -> ToyBatch:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        prob = problems.repeat_interleave(group_size)
        group = torch.arange(len(problems)).repeat_interleave(group_size)
        if hints is not None:
            hints = hints.repeat_interleave(group_size, dim=0)
        ans = torch.multinomial(torch.softmax(self.answer_logits(prob, hints), -1), 1,
                                generator=generator).squeeze(-1)
        p_more = torch.sigmoid(self.cont[prob, ans])
        u = torch.rand(len(prob), self.max_len - 1, generator=generator)
        more = u < p_more[:, None]
        # n_more = number of leading "more" tokens; stopped if an "end" fits in max_len
        n_more = torch.cumprod(more.long(), dim=1).sum(-1)
        stopped = n_more < self.max_len - 1
        reward = (ans == self.task.answer[prob]).float()
        old_logp, mask = self.token_logp(prob, ans, n_more, stopped, hints)
        return ToyBatch(prob, group, ans, n_more, stopped, reward, old_logp, mask)


@dataclass
class ToyConfig:
    estimator: str = "grpo"
    surrogate: str = "ppo_clip"
    aggregation: str = "token_mean"
    group_size: int = 8
    prompts_per_step: int = 24
    steps: int = 60
    lr: float = 0.1
    ppo_epochs: int = 1
    eps_low: float = 0.2
    eps_high: float = 0.2
    shared_scale: float = 1.0
    estimator_options: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        for name in ("group_size", "prompts_per_step", "steps", "ppo_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ToyConfig.{name} must be a positive int, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"ToyConfig.lr must be > 0, got {self.lr!r}")


def train_toy(task: ToyTask, cfg: ToyConfig, policy: ToyPolicy | None = None):
    """Train a ToyPolicy with cfg's estimator x surrogate x aggregation; returns (policy, df).

    Metrics per step: reward_mean, frac_zero_std (share of 0-variance groups), the exact pass
    rate per difficulty, mean length of correct and of incorrect completions, answer entropy,
    clip fractions, the gradient norm that reached the hard problems' answer table and the
    number of hard groups in the batch with mixed outcomes (0 < c < G): the only hard groups
    that carry a GRPO gradient.
    """
    import pandas as pd

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = policy or ToyPolicy(task, shared_scale=cfg.shared_scale)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    hard = task.mask_of("hard")
    rows = []
    for step in range(cfg.steps):
        problems = torch.randint(0, task.n_problems, (cfg.prompts_per_step,), generator=gen)
        batch = policy.sample(problems, cfg.group_size, gen)
        adv = compute_advantages(batch.reward, batch.group, cfg.estimator,
                                 **cfg.estimator_options)
        for _ in range(cfg.ppo_epochs):
            logp, _ = policy.token_logp(batch.problem, batch.answer, batch.n_more, batch.stopped)
            loss, stats = policy_loss(logp, batch.old_logp, adv, batch.mask,
                                      surrogate=cfg.surrogate, aggregation=cfg.aggregation,
                                      eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                                      max_len=policy.max_len)
            opt.zero_grad()
            loss.backward()
            hard_grad = float(policy.bias.grad[hard].norm())
            opt.step()
        with torch.no_grad():
            probs = torch.softmax(policy.answer_logits(torch.arange(task.n_problems)), -1)
            entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
        pr = policy.pass_rate()
        right = batch.reward > 0
        n_ok = torch.zeros(len(problems)).index_add_(0, batch.group, batch.reward)
        grp_mixed = (n_ok > 0) & (n_ok < cfg.group_size)
        row = {
            "step": step,
            "reward_mean": float(batch.reward.mean()),
            "frac_zero_std": 1.0 - float(grp_mixed.float().mean()),  # 0/1 rewards
            "len_correct": float(batch.length[right].mean()) if right.any() else float("nan"),
            "len_incorrect": float(batch.length[~right].mean()) if (~right).any() else float("nan"),
            "entropy": entropy,
            "hard_grad_norm": hard_grad,
            "hard_groups_mixed": int((grp_mixed & hard[problems]).sum()),
            "loss": loss.item(),
            **{k: v for k, v in stats.items() if k.startswith("clip_frac")},
        }
        for d in ("easy", "medium", "hard"):
            m = task.mask_of(d)
            if m.any():
                row[f"pass_{d}"] = float(pr[m].mean())
        rows.append(row)
    return policy, pd.DataFrame(rows)


# ----------------------------------------------------------------------------- problem views

def toy_problems(task: ToyTask) -> list[Problem]:
    """The table task as problems: prompt ``"p<index>"``, answer the correct answer index."""
    return [Problem(id=f"toy-{p:04d}", question=f"p{p}", answer=str(int(task.answer[p])),
                    source="toy-table", level=DIFFICULTY_LEVEL[task.difficulty[p]])
            for p in range(task.n_problems)]


# ----------------------------------------------------------------------------- toy hints

FAMILIES = "abcdefghijklmnopqrstuvwxyz"
"""Table toy: answer k belongs to family ``FAMILIES[k // 2]`` (pairs 0-1, 2-3, ...)."""

SKILLS = {1: "a", 2: "b", 3: "c"}
"""Table toy: the skill named by a strategy hint, from the problem's difficulty level alone."""

TABLE_HINT_EXCLUDED = {"partial_steps": 5, "explanation": 3}
"""Table toy: how many wrong answers a hint of this type rules out."""


def hint_vocab_size(n_answers: int) -> int:
    """Hint tokens of the table toy: answer k, not k, family f, skill s."""
    return 2 * n_answers + (n_answers + 1) // 2 + len(SKILLS)


def toy_hint_tokens(text: str, n_answers: int) -> list[int]:
    """The hint tokens of a table-toy hint text, clauses separated by ``;`` or newlines:
    ``answer 7`` -> [7]; ``not 1 3 4`` -> [K+1, K+3, K+4]; ``family c`` -> [2K+2];
    ``skill b`` -> [2K + ceil(K/2) + 1]."""
    K, n_fam = n_answers, (n_answers + 1) // 2
    out: list[int] = []
    for clause in re.split(r"[;\n]+", text.strip()):
        words = clause.split()
        if not words:
            continue
        head, args = words[0], words[1:]
        try:
            if head == "answer" and len(args) == 1 and 0 <= int(args[0]) < K:
                out.append(int(args[0]))
                continue
            if head == "not" and args and all(0 <= int(x) < K for x in args):
                out += [K + int(x) for x in args]
                continue
        except ValueError:
            pass
        if head == "family" and len(args) == 1 and args[0] in FAMILIES[:n_fam]:
            out.append(2 * K + FAMILIES.index(args[0]))
            continue
        if head == "skill" and len(args) == 1 and args[0] in SKILLS.values():
            out.append(2 * K + n_fam + list(SKILLS.values()).index(args[0]))
            continue
        raise ValueError(f"table-toy hint {text!r}: clause {clause!r} is not one of 'answer <k>', "
                         f"'not <k> <k> ...', 'family <{FAMILIES[0]}..{FAMILIES[n_fam - 1]}>', "
                         f"'skill <{'|'.join(SKILLS.values())}>' (k < {K})")
    return out


TOY_HINT_TYPES = HINT_TYPES + CONTEXT_TYPES
"""Hint types of both toys: NuRL's four and NudgeRL's answer-free contexts."""


def toy_table_hint(problem: Problem, hint_type: str = "abstract", n_answers: int = 10) -> str:
    """A table-toy hint in words the policy must learn to read (:class:`ToyPolicy`):

    * ``answer`` -- the answer itself, ``answer 7`` (copyable; leaks by design);
    * ``abstract`` -- the answer's family, ``family d`` (2 candidates; no number);
    * ``partial_steps`` / ``explanation`` -- 5 / 3 wrong answers ruled out, ``not 1 3 4 8 9``
      (the answer never among them, so the leak check passes);
    * ``strategy`` / ``strategy_2`` -- NudgeRL's answer-free context from the problem alone:
      the skill its difficulty needs, ``skill c``.

    The wrong answers ruled out are drawn from a generator seeded by the problem id, so a
    problem always gets the same hint.
    """
    if hint_type not in TOY_HINT_TYPES:
        raise ValueError(f"hint_type={hint_type!r}; expected one of {TOY_HINT_TYPES}")
    if hint_type in ("strategy", "strategy_2"):
        return f"skill {SKILLS[problem.level]}"
    a = int(problem.answer)
    if hint_type == "answer":
        return f"answer {a}"
    if hint_type == "abstract":
        return f"family {FAMILIES[a // 2]}"
    wrong = [k for k in range(n_answers) if k != a]
    random.Random(f"{problem.id}/{hint_type}").shuffle(wrong)
    return "not " + " ".join(map(str, sorted(wrong[:TABLE_HINT_EXCLUDED[hint_type]])))


def toy_hint(problem: Problem, hint_type: str = "abstract") -> str | None:
    """The built-in hint for a toy problem (addition or table), or None for other sources."""
    if problem.source == "toy-addition":
        return addition_hint_text(problem.question, problem.answer, hint_type)
    if problem.source == "toy-table":
        return toy_table_hint(problem, hint_type)
    return None


# ----------------------------------------------------------------------------- the table as a policy

_TABLE_PROMPT = re.compile(r"p(\d+)(?:\|(.+))?", re.S)


class CategoricalPolicy(ModulePolicy):
    """:class:`nudgelib.toy.ToyPolicy` behind the policy interface.

    Prompts are ``"p<index>"`` (see :func:`nudgelib.toy.toy_problems`), optionally followed by
    a hint ``"|<hint>"`` (:func:`nudgelib.toy.toy_table_hint`: ``p3|family c``). Tokens: answers
    0..K-1, then ``more`` = K and ``end`` = K+1; ``end`` is both EOS and pad, so the masking
    by position matters here too. Prompt ids: the problem index, then ``P + t`` for each hint
    token t. Only temperature 1 and top-p 1 are supported (the table is the distribution).
    """

    def __init__(self, toy_policy):
        self.net = toy_policy
        k = toy_policy.task.n_answers
        self.more_id, self.end_id = k, k + 1
        self.eos_ids, self.pad_id = (k + 1,), k + 1

    hint_template = "{question}|{hint}"

    def sampling_info(self):
        return {"policy": type(self).__name__, "sampler": "multinomial", "device": "cpu"}

    def encode_prompts(self, prompts):
        """``p<i>`` -> [i]; ``p<i>|<hint>`` -> [i, P + t1, P + t2, ...] for the hint's tokens."""
        n_p, k = self.net.task.n_problems, self.net.task.n_answers
        out = []
        for p in prompts:
            m = _TABLE_PROMPT.fullmatch(p) if isinstance(p, str) else None
            if m is None or int(m.group(1)) >= n_p:
                raise ValueError(f"CategoricalPolicy prompts are 'p<index>' with index < {n_p}, "
                                 f"optionally followed by a hint '|<hint>' "
                                 f"(nudgelib.toy.toy_table_hint); got {p!r}")
            ids = [int(m.group(1))]
            if m.group(2) is not None:
                ids += [n_p + t for t in toy_hint_tokens(m.group(2), k)]
            out.append(ids)
        return out

    def _parse(self, prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """Problem index [N] and the multi-hot of the hint tokens [N, H] (None: no hints)."""
        n_p = self.net.task.n_problems
        real = prompt_mask.long().sum(-1)
        first = prompt_ids.shape[1] - real
        rows = torch.arange(prompt_ids.shape[0])
        problem = prompt_ids[rows, first]
        pos = torch.arange(prompt_ids.shape[1])[None, :]
        is_hint = (pos > first[:, None]) & prompt_mask.bool()
        if not is_hint.any():
            return problem, None
        hints = torch.zeros(len(rows), self.net.U.shape[0])
        r, c = is_hint.nonzero(as_tuple=True)
        hints[r, prompt_ids[r, c] - n_p] = 1.0
        return problem, hints

    def exact_pass_rate(self, prompts: Sequence[str]) -> Tensor:
        """The exact probability [N] that one sample of each prompt (hinted or not) is right,
        read off the policy's table: no sampling."""
        ids, mask = left_pad(self.encode_prompts(prompts), self.pad_id)
        return self.net.pass_rate(*self._parse(ids, mask))

    def decode(self, ids, mask):
        return [str(int(row[0])) if m[0] > 0 else "" for row, m in zip(ids, mask)]

    def _generate(self, prompt_ids, prompt_mask, *, temperature, top_p, max_new_tokens,
                  generator):
        if temperature != 1.0 or top_p != 1.0:
            raise ValueError("CategoricalPolicy samples at temperature 1 and top_p 1 only")
        if max_new_tokens != self.net.max_len:
            raise ValueError(f"CategoricalPolicy completions have max_len={self.net.max_len} "
                             f"tokens; got max_new_tokens={max_new_tokens}")
        problem, hints = self._parse(prompt_ids, prompt_mask)
        b = self.net.sample(problem, 1, generator, hints)
        t = torch.arange(1, self.net.max_len)[None, :]
        rest = torch.where(t <= b.n_more[:, None], self.more_id, self.end_id)
        ids = torch.cat([b.answer[:, None], rest], dim=1)
        return ids, b.old_logp

    def logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                 temperature=1.0):
        if temperature != 1.0:
            raise ValueError("CategoricalPolicy scores at temperature 1 only")
        body = completion_ids[:, 1:]
        n_more = ((body == self.more_id) & (completion_mask[:, 1:] > 0)).sum(-1)
        stopped = ((body == self.end_id) & (completion_mask[:, 1:] > 0)).any(-1)
        problem, hints = self._parse(prompt_ids, prompt_mask)
        logp, _ = self.net.token_logp(problem, completion_ids[:, 0], n_more, stopped, hints)
        return logp[:, :completion_ids.shape[1]] * completion_mask  # callers may trim width
