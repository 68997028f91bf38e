"""Nudging strategies: which members get hinted, group sizes, advantages after augmentation,
the prompt the loss conditions on, and the two-stage driver. Hand-computed values throughout.

A scripted policy makes the outcomes deterministic: it answers correctly exactly when its
prompt contains a given cue, so which rows succeed is known before sampling.
"""

import math
import statistics

import pytest
import torch

from nudgelib.core.advantages import compute_advantages, nudgerl_advantages
from nudgelib.core.trigger import nurl_trigger, zero_pass_groups
from nudgelib.nudging import (
    STRATEGIES,
    AlwaysHint,
    DynamicSampling,
    NudgeRL,
    NuRL,
    SamplingContext,
    ScafGRPO,
    make_strategy,
    strategies_for,
)
from nudgelib.policies.base import Policy, left_pad
from nudgelib.rollouts import RolloutBatch, collect_rollouts
from nudgelib.tasks.problems import Problem
from nudgelib.tasks.rewards import ExactMatchScorer
from nudgelib.toy import CategoricalPolicy, ToyPolicy, ToyTask, toy_problems, toy_table_hint
from nudgelib.training.stages import PlateauDetector, drop_solved


class ScriptedPolicy(Policy):
    """Characters as tokens (id = ord + 1, EOS = pad = 0). ``rule(prompt) -> completion``."""

    eos_ids, pad_id = (0,), 0

    def __init__(self, rule):
        self.rule = rule
        self.calls: list[list[str]] = []

    def encode_prompts(self, prompts):
        return [[ord(c) + 1 for c in p] for p in prompts]

    def decode(self, ids, mask):
        return ["".join(chr(i - 1) for i, m in zip(r, mr) if m and i > 0)
                for r, mr in zip(ids.tolist(), mask.tolist())]

    def _generate(self, prompt_ids, prompt_mask, *, temperature, top_p, max_new_tokens,
                  generator):
        prompts = self.decode(prompt_ids, prompt_mask)
        self.calls.append(prompts)
        outs = [[ord(c) + 1 for c in self.rule(p)][:max_new_tokens - 1] + [0] for p in prompts]
        ids, _ = left_pad([o[::-1] for o in outs], 0)
        ids = ids.flip(1)
        return ids, torch.full(ids.shape, -0.5)

    def logprobs(self, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                 temperature=1.0):
        return torch.zeros(completion_ids.shape) * completion_mask

    def trainable_parameters(self):
        return []

    def save(self, path):
        pass

    def load(self, path):
        pass


PROBS = [Problem(id=f"q{i}", question=f"Q{i}?", answer=str(i)) for i in range(3)]


def hint_rule(prompt: str) -> str:
    """Right only with the cue 'GO' in the prompt; problem q1 is always solved."""
    qid = prompt.split("?")[0].split("Q")[-1]
    return qid if ("GO" in prompt or qid == "1") else "x"


def ctx_for(policy, G=4):
    return SamplingContext(policy=policy, scorer=ExactMatchScorer(), group_size=G,
                           max_new_tokens=8, generator=torch.Generator().manual_seed(0))


def plain_batch(policy, G=4, probs=PROBS):
    return collect_rollouts(policy, probs, ExactMatchScorer(), group_size=G, max_new_tokens=8)


def snapshot(b: RolloutBatch, rows):
    return [(b.texts[r], b.hints[r], b.prompts[r], float(b.rewards[r])) for r in rows]


# ----------------------------------------------------------------------------- the trigger

# rows of 6 groups, interleaved, sizes 3, 2, 3, 1, 2, 2 (hand-built; see each group's comment)
GROUP = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 3, 4, 4, 5, 5])
PASSED = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
HINTED = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], dtype=torch.bool)
HAS_HINT = torch.tensor([True, True, False, True, True, True])
# group 0: rows 1, 3, 6, all fail, hint          -> nudged, keeps row 1, regenerates 3 and 6
# group 1: rows 2, 5, row 2 passes               -> left alone
# group 2: rows 0, 4, 7, all fail, no hint       -> 0/G but missing a hint
# group 3: row 8 alone                           -> no group to compare with: never fires
# group 4: rows 9, 10, row 10 already hinted     -> not fired twice
# group 5: rows 11, 12, all fail, hint           -> nudged, keeps row 11, regenerates 12


def test_zero_pass_groups_by_hand():
    got = zero_pass_groups(PASSED, GROUP, n_groups=6, already_hinted=HINTED)
    assert got.tolist() == [True, False, True, False, False, True]
    assert zero_pass_groups(PASSED, GROUP).tolist() == [True, False, True, False, True, True]


def test_nurl_trigger_keeps_the_first_failure_and_regenerates_the_rest_by_hand():
    t = nurl_trigger(PASSED, GROUP, HAS_HINT, already_hinted=HINTED)
    assert t.zero_pass.tolist() == [True, False, True, False, False, True]
    assert t.nudged.tolist() == [True, False, False, False, False, True]
    assert t.missing_hint.tolist() == [False, False, True, False, False, False]
    assert t.groups == [0, 5] and t.members == [[1, 3, 6], [11, 12]]
    assert t.kept == [1, 11]
    assert t.regenerate == [3, 6, 12] and t.with_hint == [True, True, True]
    fresh = nurl_trigger(PASSED, GROUP, HAS_HINT, already_hinted=HINTED, keep="fresh")
    assert fresh.kept == [] and fresh.regenerate == [1, 3, 6, 11, 12]
    assert fresh.with_hint == [False, True, True, False, True]
    with pytest.raises(ValueError, match="keep='both'"):
        nurl_trigger(PASSED, GROUP, HAS_HINT, keep="both")


def test_nurl_trigger_asks_a_hint_function_about_the_zero_pass_groups_only():
    asked = []

    def has_hint(g):
        asked.append(g)
        return bool(HAS_HINT[g])

    t = nurl_trigger(PASSED, GROUP, has_hint, n_groups=6, already_hinted=HINTED)
    assert asked == [0, 2, 5]  # groups 1, 3, 4 cannot fire: no lookup
    assert t.groups == [0, 5] and t.regenerate == [3, 6, 12]
    assert t.missing_hint.tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError, match="n_groups"):
        nurl_trigger(PASSED, GROUP, has_hint)


def test_nurl_trigger_on_trl_shaped_groups_picks_members_1_to_g_minus_1():
    """TRL lays a batch out as G consecutive rows per prompt; the same function decides."""
    G = 4
    passed = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    t = nurl_trigger(passed, torch.arange(12) // G, torch.tensor([True, True, False]))
    assert t.groups == [0] and t.regenerate == [1, 2, 3] and t.kept == [0]
    assert t.missing_hint.tolist() == [False, False, True]


def test_one_registry_says_where_each_strategy_runs():
    assert strategies_for("nudgelib") == tuple(STRATEGIES)
    assert strategies_for("trl") == ("none", "nurl", "always")
    assert [STRATEGIES[n].sets_advantages for n in STRATEGIES] == [False, False, False, True, False,
                                                                    False, False]


# ----------------------------------------------------------------------------- NuRL

def test_nurl_keeps_one_failure_and_hints_the_other_g_minus_1():
    pol = ScriptedPolicy(hint_rule)
    b = plain_batch(pol)
    assert b.group_pass_counts().tolist() == [0, 4, 0]
    before = snapshot(b, range(len(b)))
    nurl = NuRL({"q0": "GO", "q1": "GO"})  # q2 has no hint: it cannot be nudged
    out = nurl.nudge(b, ctx_for(pol))
    assert out.group_sizes().tolist() == [4, 4, 4]
    assert out.hints == [None, "GO", "GO", "GO"] + [None] * 8
    assert out.prompts[1] == "Q0?\n\nHint: GO" and out.prompts[0] == "Q0?"
    assert snapshot(out, [0]) == before[:1]  # the kept failure is the original rollout
    assert snapshot(out, range(4, 12)) == before[4:]  # pass rate > 0 / no hint: untouched
    assert out.correct.tolist()[:4] == [False, True, True, True]
    assert out.nudge.frac_nudged == pytest.approx(1 / 3)
    assert out.nudge.nudged_groups == [0]
    assert nurl.totals["missing_hints"] == 1 and nurl.totals["hinted_rows"] == 3
    # GRPO on [0, 1, 1, 1]: mean 3/4, Bessel std 1/2 -> [-3/2, 1/2, 1/2, 1/2]; others 0
    adv = compute_advantages(out.rewards, out.group, "grpo")
    assert adv[:4].tolist() == pytest.approx([-1.5, 0.5, 0.5, 0.5], abs=1e-5)
    assert adv[4:].abs().max() == 0


def test_nurl_changes_nothing_when_every_group_passes_at_least_once():
    pol = ScriptedPolicy(lambda p: "1" if "Q1" in p else ("0" if "Q0" in p else "2"))
    b = plain_batch(pol)
    before = (snapshot(b, range(len(b))), b.prompt_ids.clone(), b.completion_ids.clone())
    out = NuRL({"q0": "GO", "q1": "GO", "q2": "GO"}).augment(b, ctx_for(pol))
    assert snapshot(out, range(len(out))) == before[0]
    assert torch.equal(out.prompt_ids, before[1]) and torch.equal(out.completion_ids, before[2])
    assert not out.hinted.any()
    assert len(pol.calls) == 1  # no second sampling call


@pytest.mark.parametrize("condition_on", ["hinted", "original"])
def test_the_loss_conditions_on_the_hinted_or_the_original_prompt(condition_on):
    pol = ScriptedPolicy(hint_rule)
    b = plain_batch(pol)
    out = NuRL({"q0": "GO"}, condition_on=condition_on).augment(b, ctx_for(pol))
    hinted_ids = pol.encode_prompts(["Q0?\n\nHint: GO"])[0]
    plain_ids = pol.encode_prompts(["Q0?"])[0]
    for r in (1, 2, 3):
        real = out.prompt_ids[r][out.prompt_mask[r].bool()].tolist()
        assert real == (hinted_ids if condition_on == "hinted" else plain_ids)
        assert out.prompts[r] == "Q0?\n\nHint: GO"  # sampled from the hinted prompt either way
        # old log-probs are the sampling ones (the scripted sampler reports -0.5 per token)
        n = int(out.completion_mask[r].sum())
        assert out.old_logp[r, :n].tolist() == [-0.5] * n
    assert out.prompt_ids[0][out.prompt_mask[0].bool()].tolist() == plain_ids
    if condition_on == "original":
        assert out.nudge.conditioned_on_original == [1, 2, 3]


@pytest.mark.parametrize("condition_on", ["hinted", "original"])
def test_condition_on_with_a_policy_whose_logprobs_depend_on_the_prompt(condition_on):
    """A tiny transformer with random weights: every prompt character moves its log-probs.
    Under 'hinted' a hinted row is scored under the prompt it was sampled from, so its first
    update is on-policy (ratio 1); under 'original' it is scored under the plain question and
    the ratio to the sampling log-probs is not 1."""
    from nudgelib.policies.base import left_pad
    from nudgelib.policies.char import CharTransformerPolicy

    pol = CharTransformerPolicy(seed=0)
    probs = [Problem(id="a", question="12+34=", answer="46"),
             Problem(id="b", question="7+5=", answer="12")]
    b = collect_rollouts(pol, probs, ExactMatchScorer(), group_size=4, max_new_tokens=4,
                         generator=torch.Generator().manual_seed(0))
    assert not b.correct.any()  # random weights: both groups are 0/4 and get nudged
    ctx = SamplingContext(policy=pol, scorer=ExactMatchScorer(), group_size=4,
                          max_new_tokens=4, generator=torch.Generator().manual_seed(1))
    out = NuRL({"a": "H4.", "b": "H1."}, condition_on=condition_on).augment(b, ctx)
    rows = out.hinted.nonzero().flatten().tolist()
    assert len(rows) == 6
    for r in rows:
        p = probs[int(out.group[r])]
        cm = out.completion_mask[r:r + 1]
        ids = out.completion_ids[r:r + 1]

        def score(prompt, ids=ids, cm=cm):
            pi, pm = left_pad(pol.encode_prompts([prompt]), pol.pad_id)
            return pol.logprobs(pi, pm, ids, cm).detach()

        got = pol.logprobs(out.prompt_ids[r:r + 1], out.prompt_mask[r:r + 1], ids, cm).detach()
        hinted = score(pol.hint_template.format(hint=out.hints[r], question=p.question))
        plain = score(p.question)
        assert (hinted - plain).abs().max() > 1e-3  # the prompt matters to this policy
        want = hinted if condition_on == "hinted" else plain
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.allclose(out.old_logp[r:r + 1, :ids.shape[1]], hinted, atol=1e-5)


def test_nurl_keep_fresh_resamples_the_hint_free_member():
    pol = ScriptedPolicy(hint_rule)
    b = plain_batch(pol, probs=PROBS[:1])
    out = NuRL({"q0": "GO"}, keep="fresh").augment(b, ctx_for(pol))
    assert out.hints == [None, "GO", "GO", "GO"]
    assert pol.calls[1][0] == "Q0?"  # row 0 was sampled again, without the hint


def test_nurl_never_re_nudges_a_group_that_already_has_hinted_rows():
    pol = ScriptedPolicy(lambda p: "x")  # nothing is ever right, hinted or not
    b = plain_batch(pol, probs=PROBS[:1])
    nurl = NuRL({"q0": "GO"})
    nurl.augment(b, ctx_for(pol))
    calls = len(pol.calls)
    nurl.augment(b, ctx_for(pol))
    assert len(pol.calls) == calls


# ----------------------------------------------------------------------------- Scaf-GRPO

def test_scaf_replaces_one_failure_with_the_success_under_the_least_hint():
    pol = ScriptedPolicy(hint_rule)  # success needs 'GO', which only the 2nd tier carries
    bank = {"q0": {"abstract": "IDEA", "partial_steps": "GO STEP"},
            "q2": {"abstract": "IDEA"}}  # q2: no tier works -> stays as it was
    b = plain_batch(pol)
    before = snapshot(b, range(len(b)))
    scaf = ScafGRPO(bank, tiers=("abstract", "partial_steps"), tries_per_tier=2)
    out = scaf.nudge(b, ctx_for(pol))
    assert out.group_sizes().tolist() == [4, 4, 4]
    assert out.hints[:4] == [None, None, None, "IDEA\n\nGO STEP"]  # cumulative tier 2
    assert snapshot(out, range(3)) == before[:3]
    assert snapshot(out, range(4, 12)) == before[4:]
    assert out.nudge.scaf_tier == {0: 2}
    assert scaf.totals["solved_at_tier_2"] == 1 and scaf.totals["tried_groups"] == 2
    # tier 1 ('IDEA') was tried for both 0/4 groups, 2 tries each; tier 2 only for q0
    assert [len(c) for c in pol.calls] == [12, 4, 2]
    # GRPO on [0, 0, 0, 1]: mean 1/4, Bessel std 1/2 -> [-1/2, -1/2, -1/2, 3/2]
    adv = compute_advantages(out.rewards, out.group, "grpo")
    assert adv[:4].tolist() == pytest.approx([-0.5, -0.5, -0.5, 1.5], abs=1e-5)
    assert adv[8:].abs().max() == 0  # q2 unchanged, still no signal
    assert out.nudge.frac_nudged == pytest.approx(1 / 3)


def test_scaf_warm_up_samples_no_hints_for_its_share_of_the_steps():
    pol = ScriptedPolicy(hint_rule)
    bank = {"q0": {"abstract": "GO"}}
    scaf = ScafGRPO(bank, tiers=("abstract",), warmup_fraction=0.15, total_steps=20)
    assert scaf.warmup_steps == 3  # 15 % of 20 steps
    for step, nudged in ((1, False), (3, False), (4, True)):
        ctx = ctx_for(pol)
        ctx.step = step
        out = scaf.augment(plain_batch(pol), ctx)
        assert bool(out.hinted.any()) is nudged, step
    assert scaf.totals["warmup_steps_skipped"] == 2
    with pytest.raises(ValueError, match="needs total_steps"):
        ScafGRPO(bank, warmup_fraction=0.15)
    with pytest.raises(ValueError, match=r"share in \[0, 1\)"):
        ScafGRPO(bank, warmup_fraction=1.5, total_steps=10)


# ----------------------------------------------------------------------------- always

def test_always_hints_every_member_of_every_group():
    pol = ScriptedPolicy(hint_rule)
    out = AlwaysHint({"q0": "GO", "q1": "GO", "q2": "GO"}).sample(PROBS, ctx_for(pol))
    assert out.hinted.all() and out.group_sizes().tolist() == [4, 4, 4]
    assert out.correct.all()


# ----------------------------------------------------------------------------- NudgeRL

def test_nudgerl_advantages_match_the_hand_computed_decomposition():
    r = torch.tensor([1., 0, 0, 1, 0, 0, 1, 0])
    c = torch.tensor([0, 0, 0, -1, 1, 1, 1, -1])
    m, m0, m1, lam = 3 / 8, 1 / 3, 1 / 3, 1.1
    a = [(1 - m0) + lam * (m0 - m), (0 - m0) + lam * (m0 - m), (0 - m0) + lam * (m0 - m),
         1 - m, (0 - m1) + lam * (m1 - m), (0 - m1) + lam * (m1 - m),
         (1 - m1) + lam * (m1 - m), 0 - m]
    # the population std and eps 1e-5, as NudgeRL's code standardises
    mu, sd = statistics.mean(a), statistics.pstdev(a)
    want = [(x - mu) / (sd + 1e-5) for x in a]
    got = nudgerl_advantages(r, torch.zeros(8, dtype=torch.long), c, lam=lam)
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    bessel = nudgerl_advantages(r, torch.zeros(8, dtype=torch.long), c, lam=lam, unbiased=True)
    assert bessel.tolist() == pytest.approx([(x - mu) / (statistics.stdev(a) + 1e-5) for x in a],
                                            abs=1e-5)
    # no context anywhere: plain r - mean, standardised by hand: mean 3/8, deviations 5/8 (x3)
    # and -3/8 (x5), population var (3 * 25 + 5 * 9) / 64 / 8 = 120 / 512
    got0 = nudgerl_advantages(r, torch.zeros(8, dtype=torch.long), torch.full((8,), -1))
    sd0 = math.sqrt(120 / 512)
    assert got0.tolist() == pytest.approx([(x - 3 / 8) / (sd0 + 1e-5) for x in r.tolist()],
                                          abs=1e-5)
    # all rewards equal: zero, not NaN
    z = nudgerl_advantages(torch.ones(8), torch.zeros(8, dtype=torch.long), c)
    assert z.abs().max() == 0


def test_nudgerl_samples_contexts_with_dropout_and_keeps_the_plain_prompt():
    pol = ScriptedPolicy(hint_rule)
    bank = {"q0": {"strategy": "GO A", "strategy_2": "GO B", "abstract": "NOT USED"}}
    nrl = NudgeRL(bank, p_drop=0.5)  # default contexts: the answer-free strategy hints
    out = nrl.sample(PROBS[:1], ctx_for(pol, G=8))
    ctx = out.contexts.context.tolist()
    assert len(out) == 8 and out.group_sizes().tolist() == [8]
    assert all(c in (0, -1) for c in ctx[:4]) and all(c in (1, -1) for c in ctx[4:])
    assert 0 < ctx.count(-1) < 8  # seeded: some rollouts dropped their context, some kept it
    for i, c in enumerate(ctx):
        assert out.hints[i] == {0: "GO A", 1: "GO B", -1: None}[c]
        assert bool(out.correct[i]) == (c >= 0)
        plain = out.contexts.plain_prompt_ids[i][out.contexts.plain_prompt_mask[i].bool()]
        assert plain.tolist() == pol.encode_prompts(["Q0?"])[0]
    assert out.contexts.n_context_rows == sum(c >= 0 for c in ctx)
    # the advantages of docs/method.md §3, by hand: rewards are 1 exactly where a context was
    # kept, so m_c = 1 for each kept context and a_i = lam (1 - m) there, -m without a context
    m = sum(c >= 0 for c in ctx) / 8
    a = [1.1 * (1 - m) if c >= 0 else -m for c in ctx]
    # standardised with the population std and eps 1e-5, as NudgeRL's code does
    # (tally0818/NudgeRL, NudgeRLTrainer.compute_advantage_with_groups)
    mu, sd = statistics.mean(a), statistics.pstdev(a)
    assert nrl.advantages(out).tolist() == pytest.approx([(x - mu) / (sd + 1e-5) for x in a],
                                                         abs=1e-5)
    bessel = statistics.stdev(a)  # the other reading differs by more than the tolerance
    assert nrl.advantages(out).tolist() != pytest.approx([(x - mu) / (bessel + 1e-5) for x in a],
                                                         abs=1e-5)
    with pytest.raises(ValueError, match="group_size=7 is not a multiple"):
        nrl.sample(PROBS[:1], ctx_for(pol, G=7))


def test_nudgerl_distillation_term_is_the_advantage_weighted_mean_log_likelihood():
    task = ToyTask.make({"hard": 3}, seed=1)
    pol = CategoricalPolicy(ToyPolicy(task, max_len=4))
    probs = toy_problems(task)
    nrl = NudgeRL(lambda p, kind: toy_table_hint(p, kind), p_drop=0.5, distill_coef=0.1,
                  context_types=("answer", "explanation"))  # strong hints: mixed rewards
    ctx = SamplingContext(policy=pol, scorer=ExactMatchScorer(), group_size=8,
                          max_new_tokens=4, generator=torch.Generator().manual_seed(3))
    b = nrl.sample(probs, ctx)
    adv = nrl.advantages(b)
    rows = torch.arange(len(b))
    aux = nrl.auxiliary_loss(pol, b, rows, adv)
    sel = (b.contexts.context >= 0).nonzero().flatten()
    total = 0.0
    for i in sel.tolist():  # one row at a time, by the formula
        n = int(b.completion_mask[i].sum())
        lp = pol.logprobs(b.contexts.plain_prompt_ids[i:i + 1], b.contexts.plain_prompt_mask[i:i + 1],
                          b.completion_ids[i:i + 1], b.completion_mask[i:i + 1])
        total += float(adv[i]) * float(lp.detach().sum()) / n
    assert adv.abs().sum() > 0  # mixed rewards: the term is not trivially 0
    assert float(aux) == pytest.approx(-0.1 * total / len(sel), rel=1e-5)
    halves = [nrl.auxiliary_loss(pol, b, rows[:10], adv),
              nrl.auxiliary_loss(pol, b, rows[10:], adv)]
    assert float(sum(h for h in halves if h is not None)) == pytest.approx(float(aux), rel=1e-5)
    aux.backward()
    assert pol.net.bias.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- registry, stages

def test_registry_and_option_errors_name_the_problem():
    assert set(STRATEGIES) == {"none", "nurl", "scaf", "nudgerl", "always", "dynamic", "prefix"}
    with pytest.raises(ValueError, match=r"max_resamples=-1; expected an integer >= 0"):
        make_strategy("dynamic", max_resamples=-1)
    with pytest.raises(ValueError, match="unknown nudging strategy 'nurll'"):
        make_strategy("nurll")
    with pytest.raises(ValueError, match="condition_on='prompt'"):
        make_strategy("nurl", {}, condition_on="prompt")
    with pytest.raises(ValueError, match="bad option"):
        make_strategy("nurl", {}, tiers=("a",))
    with pytest.raises(ValueError, match="needs hints"):
        pol = ScriptedPolicy(hint_rule)
        NuRL().augment(plain_batch(pol), ctx_for(pol))


def test_plateau_detector_fires_after_patience_steps_without_improvement():
    d = PlateauDetector(patience=3, window=1)
    # best 0.3 at step 3; steps 4, 5, 6 do not beat it -> fires at step 6 (6 - 3 >= 3)
    fired = [d.update(v) for v in [0.1, 0.2, 0.3, 0.3, 0.25, 0.3]]
    assert fired == [False, False, False, False, False, True]
    d2 = PlateauDetector(patience=2, window=2)  # averages 0, 0.5, 1, 0.5, 0 -> fires at 5th
    assert [d2.update(v) for v in [0, 1, 1, 0, 0]] == [False, False, False, False, True]
    d3 = PlateauDetector(patience=2, window=1)
    d3.load_state_dict(d2.state_dict())
    assert d3.since_best == 2 and d3.best == pytest.approx(1.0) and d3.best_step == 3
    old = PlateauDetector(patience=2, window=1)  # a checkpoint written before steps counted
    old.load_state_dict({"values": [0.0, 1.0, 1.0, 0.0], "best": 1.0, "since_best": 2})
    assert old.best_step == 2 and old.update(0.0) is True


def test_plateau_patience_counts_training_steps_not_updates():
    """A metric logged every 5 steps: window 5 covers one value, and patience 10 means 10
    training steps, not 10 logged values (which would be 50 steps)."""
    d = PlateauDetector(patience=10, window=5)
    out = {s: d.update(v, s) for s, v in [(5, 0.2), (10, 0.4), (15, 0.4), (20, 0.3)]}
    assert out == {5: False, 10: False, 15: False, 20: True}  # best at 10; 20 - 10 >= 10
    assert d.since_best == 10 and d.fired(19) is False
    w = PlateauDetector(patience=3, window=4)  # window in steps: values of steps > s - 4
    w.update(1.0, 1), w.update(0.0, 2), w.update(0.0, 6)
    assert w.best == pytest.approx(1.0) and w.best_step == 1  # step 6 averages only itself
    with pytest.raises(ValueError, match="step 6 is not after"):
        w.update(1.0, 6)


def test_drop_solved_removes_exactly_the_problems_solved_n_of_n():
    pol = ScriptedPolicy(hint_rule)  # q1 always right, q0 and q2 never
    kept, counts = drop_solved(pol, PROBS, ExactMatchScorer(), n_samples=8, max_new_tokens=8)
    assert counts == [0, 8, 0] and [p.id for p in kept] == ["q0", "q2"]


def test_table_toy_hints_act_only_through_the_learned_hint_table():
    """A hint is input tokens read through the learned table U: before any learning it changes
    nothing; after the hint-reading pre-training the hinted pass rate is softmax(bias + the
    hint tokens' rows of U), sampled and by hand, and the answer hint is copied."""
    from nudgelib.toy import toy_hint_tokens

    task = ToyTask.make({"hard": 2}, seed=0)
    probs = toy_problems(task)
    blank = CategoricalPolicy(ToyPolicy(task, max_len=4, hint_reading_steps=0))
    assert blank.net.U.abs().max() == 0
    hinted = [blank.hint_template.format(question=p.question, hint=toy_table_hint(p, "answer"))
              for p in probs]
    assert torch.allclose(blank.exact_pass_rate(hinted),
                          blank.exact_pass_rate([p.question for p in probs]))
    pol = CategoricalPolicy(ToyPolicy(task, max_len=4))
    for kind in ("abstract", "answer"):
        hints = [toy_table_hint(p, kind) for p in probs]
        b = collect_rollouts(pol, probs, ExactMatchScorer(), group_size=4000, max_new_tokens=4,
                             hints=hints, generator=torch.Generator().manual_seed(0))
        by_hand = []
        for p, h in zip(probs, hints):
            i = int(p.question[1:])
            logits = pol.net.bias[i].detach() + sum(pol.net.U[t].detach()
                                                    for t in toy_hint_tokens(h, 10))
            by_hand.append(float(torch.softmax(logits, -1)[int(p.answer)]))
        assert float(b.correct.float().mean()) == pytest.approx(sum(by_hand) / 2, abs=0.015)
        lp = pol.logprobs(b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask)
        assert torch.allclose(lp, b.old_logp, atol=1e-5)
        if kind == "answer":
            assert min(by_hand) > 0.3  # copied far more often than the base 0.0007
    with pytest.raises(ValueError, match="clause 'h3s9' is not one of"):
        pol.encode_prompts(["p0|h3s9"])


# ----------------------------------------------------------------------------- dynamic sampling

def scripted_draws(draws: dict[str, list[str]]):
    """A rule that answers problem q<i>'s rows, in order, from ``draws["q<i>"]``."""
    queues = {q: iter(a) for q, a in draws.items()}
    return lambda prompt: next(queues["q" + prompt.split("?")[0].split("Q")[-1]])


# G = 4. q0 is mixed from the start; q1 is 0/4, then 0/4 again, then 1/4; q2 is 4/4, then 3/4
DRAWS = {"q0": ["0", "x", "x", "x"],
         "q1": ["x"] * 4 + ["x"] * 4 + ["1", "x", "x", "x"],
         "q2": ["2"] * 4 + ["2", "x", "2", "2"]}


@pytest.mark.parametrize("cap,resampled_rows,rescued,q1_after", [
    (2, 12, 2, [1.0, 0.0, 0.0, 0.0]),  # round 1: q1 and q2 (8 rows); round 2: q1 (4 rows)
    (1, 8, 1, [0.0] * 4),              # the cap stops q1 at 0/4 after one redraw
    (0, 0, 0, [0.0] * 4),              # cap 0: plain GRPO
])
def test_dynamic_sampling_redraws_exactly_the_flat_groups_and_books_every_row(
        cap, resampled_rows, rescued, q1_after):
    pol = ScriptedPolicy(scripted_draws(DRAWS))
    ctx = ctx_for(pol)
    b = ctx.collect(PROBS)
    assert b.group_pass_counts().tolist() == [1, 0, 4]
    first = snapshot(b, range(4))
    dyn = DynamicSampling(max_resamples=cap)
    assert dyn.flat_groups(b) == [1, 2]
    out = dyn.nudge(b, ctx)
    assert snapshot(out, range(4)) == first  # q0 had a spread: never redrawn
    assert out.rewards[4:8].tolist() == q1_after
    if cap:
        assert out.rewards[8:12].tolist() == [1.0, 0.0, 1.0, 1.0]  # q2 redrawn once, 3/4
    assert not out.hinted.any() and out.nudge.frac_nudged == 0
    assert dyn.totals["resampled_rows"] == resampled_rows == ctx.rows_sampled
    assert dyn.totals["rescued_groups"] == rescued
    # the ledger: every completion here is one character and EOS (2 tokens); one call per draw
    assert ctx.ledger["rows_plain"] == 12 and ctx.ledger["tokens_plain"] == 24
    assert ctx.ledger["rows_resampled"] == resampled_rows
    assert ctx.ledger["tokens_resampled"] == 2 * resampled_rows
    assert ctx.ledger["tokens_hinted"] == ctx.ledger["rows_hinted"] == 0
    assert ctx.ledger["model_calls"] == 1 + {2: 2, 1: 1, 0: 0}[cap]
    # after the redraws, GRPO sees a spread wherever one was found
    adv = compute_advantages(out.rewards, out.group, "grpo")
    assert (adv[4:8].abs().sum() > 0) == (cap == 2)


def test_the_ledger_books_hinted_rows_apart_and_nurl_fresh_rows_as_resampled():
    pol = ScriptedPolicy(hint_rule)
    ctx = ctx_for(pol)
    b = ctx.collect(PROBS[:1])  # q0: 0/4, 'x' + EOS each
    NuRL({"q0": "GO"}, keep="fresh").nudge(b, ctx)  # 3 hinted rows ('0' + EOS) + 1 fresh plain
    assert (ctx.ledger["rows_plain"], ctx.ledger["rows_hinted"], ctx.ledger["rows_resampled"]) == (4, 3, 1)
    assert (ctx.ledger["tokens_plain"], ctx.ledger["tokens_hinted"], ctx.ledger["tokens_resampled"]) == (8, 6, 2)
    assert ctx.ledger["model_calls"] == 2


# ----------------------------------------------------------------------------- prefix hints

def test_the_prefix_schedule_and_the_prefix_by_hand():
    from nudgelib.hints.prefix import linear_anneal, solution_prefix

    # start 0.5, 10 annealing steps: 0.5 at step 1, 0.25 at step 6, 0 from step 11 on
    assert [linear_anneal(s, 0.5, 10) for s in (1, 6, 11, 12)] == [0.5, 0.25, 0.0, 0.0]
    assert linear_anneal(1, 0.5, 0) == 0.0
    two = Problem(id="c", question="What is 7 + 9 + 2?", answer="18",
                  solution="7 + 9 = 16, so the question is 16 + 2.\n16 + 2 = 18")
    # two steps: half gives the first line; the last step (the answer) is never given
    assert solution_prefix(two, 0.49) is None
    assert solution_prefix(two, 0.5) == solution_prefix(two, 1.0) == "7 + 9 = 16, so the question is 16 + 2."
    words = Problem(id="w", question="?", answer="4", solution="add two and two to get 4")
    assert solution_prefix(words, 0.5) == "add two and"  # 3 of 6 words
    assert solution_prefix(Problem(id="n", question="?", answer="1"), 1.0) is None  # no solution


def test_prefix_hints_prefix_every_prompt_until_annealed_and_train_only_the_completion():
    from nudgelib.nudging import PrefixHints

    probs = [Problem(id=f"q{i}", question=f"Q{i}?", answer=str(i), solution=f"step {i}\nanswer {i}")
             for i in range(2)]
    pol = ScriptedPolicy(lambda p: p.split("?")[0][-1] if "step" in p else "x")
    pre = PrefixHints(start=0.5, anneal_steps=2)
    ctx = ctx_for(pol)
    ctx.step = 21  # the strategy's first step (a fork's step 21): fraction 0.5, 1 of 2 lines
    b = pre.nudge(pre.sample(probs, ctx), ctx)
    assert b.hints == ["step 0"] * 4 + ["step 1"] * 4 and b.correct.all()
    assert all(p.endswith("Hint: step 0") for p in b.prompts[:4])
    # the prefix is in the prompt: the trained tokens are the policy's answer and EOS only
    assert b.lengths.tolist() == [2] * 8 and "step" not in "".join(b.texts)
    assert ctx.ledger["rows_hinted"] == 8 and ctx.ledger["rows_plain"] == 0
    # its second step: fraction 0.25, a quarter of 2 lines is no line: plain sampling
    assert pre.sample(probs, ctx) is None and pre.fraction == 0.25
    assert pre.sample(probs, ctx) is None and pre.fraction == 0.0  # third: annealed away
    assert pre.state_dict()["steps_done"] == 3


def test_prefix_hints_on_zero_pass_groups_only():
    from nudgelib.nudging import PrefixHints

    probs = [Problem(id="q0", question="Q0?", answer="0", solution="step 0\nanswer 0"),
             Problem(id="q1", question="Q1?", answer="1", solution="step 1\nanswer 1")]
    pol = ScriptedPolicy(lambda p: p.split("?")[0][-1] if ("step" in p or "Q1" in p) else "x")
    pre = PrefixHints(start=1.0, anneal_steps=10, apply="zero_pass")
    ctx = ctx_for(pol)
    ctx.step = 1
    assert pre.sample(probs, ctx) is None  # drawn plainly first
    b = pre.nudge(ctx.collect(probs), ctx)
    assert b.hints == [None, "step 0", "step 0", "step 0"] + [None] * 4  # q1 passed: untouched
    assert b.correct.tolist() == [False, True, True, True] + [True] * 4
    with pytest.raises(ValueError, match="condition_on='original'"):
        PrefixHints(condition_on="original")
