"""Rewrites (``BeamConfig.rewrite``): hard backtracking into a step the verifier rejects.

The engine feeds a rewrite's kept prefix as if it had chosen it: with the seed of the step it came
from and no ban, it draws that step again, token for token (same log-prob, same hidden states).
With a ban, the token after the prefix is never the banned one. In the beam, a beam rewrites
only when every child it drew scores P(error) >= ``rewrite_at``, from its best child's least
likely token; replay reproduces such a tree."""

from __future__ import annotations

import math

import pytest
import torch

import search
from policy import tiny_policy
from policy.data import generate_problems
from search.config import BeamConfig
from search.interfaces import StepRequest
from search.replay import replay
from search.strategies.beam import branch_point
from verifier import VerifierHead

Q = "Tom has 3 apples and buys 2 more. How many apples?"
KNOBS = dict(strategy="beam", width=2, samples=2, max_depth=3, max_step_tokens=10, temperature=1.0, threshold=1.0)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(0)
    h = VerifierHead(32, width=8)
    with torch.no_grad():
        h.net[-1].weight.mul_(20.0)  # scores spread around 0.5
    return h


def _draw(engine, root, seed, temperature=1.0, **kw):
    (res,) = engine.expand([StepRequest(state=root, seeds=(seed,), **kw)], temperature=temperature,
                           max_step_tokens=12)
    return res.samples[0]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_prefix_of_a_steps_own_tokens_with_its_seed_draws_that_step_again(policy, seed):
    engine = policy.engine(share_kv=True)
    (prompt,) = engine.start([Q])
    first = _draw(engine, prompt.state, seed)
    if policy.backtrack_id in first.raw_ids or len(first.ids) < 2:
        pytest.skip("this seed drew a ⟨b⟩ or a one-token step")
    for k in range(len(first.ids)):
        again = _draw(engine, prompt.state, seed, prefix=tuple(first.ids[:k]))
        assert again.raw_ids == first.raw_ids and again.ids == first.ids
        assert math.isclose(again.logprob, first.logprob, rel_tol=1e-5, abs_tol=1e-5)
        torch.testing.assert_close(again.step_hidden, first.step_hidden, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again.step_logprobs, first.step_logprobs, rtol=1e-5, atol=1e-5)


def test_the_banned_token_is_never_chosen_after_the_prefix(policy):
    engine = policy.engine(share_kv=True)
    (prompt,) = engine.start([Q])
    step = next(s for s in (_draw(engine, prompt.state, seed) for seed in range(50))
                if len(s.ids) >= 2 and policy.backtrack_id not in s.raw_ids)
    prefix = tuple(step.ids[:1])
    (res,) = engine.expand([StepRequest(state=prompt.state, seeds=(0,), prefix=prefix)], temperature=0.0,
                           max_step_tokens=2)
    top = res.samples[0].raw_ids[1]  # greedy after the prefix
    assert res.samples[0].raw_ids[:1] == prefix
    (res,) = engine.expand([StepRequest(state=prompt.state, seeds=(0,), prefix=prefix, ban=top)], temperature=0.0,
                           max_step_tokens=2)
    assert res.samples[0].raw_ids[:1] == prefix and res.samples[0].raw_ids[1] != top
    sampled = engine.expand([StepRequest(state=prompt.state, seeds=tuple(range(40)), prefix=prefix, ban=top)],
                            temperature=1.5, max_step_tokens=12)[0].samples
    assert all(s.raw_ids[:1] == prefix and s.raw_ids[1] != top for s in sampled)
    free = engine.expand([StepRequest(state=prompt.state, seeds=tuple(range(40)), prefix=prefix)],
                         temperature=0.3, max_step_tokens=12)[0].samples
    assert any(s.raw_ids[1] == top for s in free)  # without the ban, the likeliest token does come


def test_branch_point_is_the_least_likely_token_but_not_the_last():
    assert branch_point((-0.1, -3.0, -0.5, -9.0), 4) == 1  # the last token ends the step: never the branch
    assert branch_point((-2.0, -2.0, -0.1), 3) == 0  # ties: the earliest
    assert branch_point((-5.0,), 1) == 0
    assert branch_point((), 3) == 0  # unknown log-probs: back up to the step's start
    assert branch_point((-1.0, -2.0), 3) == 0  # log-probs that do not match the ids: the step's start


def _solve(policy, head, **kw):
    problems = list(generate_problems(3, seed=3, split="test"))
    return search.solve_many([p.question for p in problems], policy=policy, verifier=head, seed=0, **{**KNOBS, **kw})


def test_beams_rewrite_only_when_every_child_is_rejected(policy, head):
    plain = _solve(policy, head)
    never = _solve(policy, head, rewrite=2, rewrite_at=1.0)  # no P(error) reaches 1: no rewrite
    for a, b in zip(plain, never, strict=True):
        assert [n.raw_ids for n in a.tree.nodes] == [n.raw_ids for n in b.tree.nodes]
        assert a.answer == b.answer and a.stats["tokens_generated"] == b.stats["tokens_generated"]
    always = _solve(policy, head, rewrite=2, rewrite_at=1e-9)  # every child counts as wrong
    rewrites = 0
    for sol in always:
        t = sol.tree
        for n in t.nodes[1:]:
            kids = [t.nodes[c] for c in t.children[n.parent]]
            firsts = [k for k in kids if k.forced == 0 and k.banned is None]
            if n.banned is None:
                continue
            rewrites += 1
            drawn = [k for k in firsts if k.status != "rejected" and k.ids]
            best = min(drawn, key=lambda k: (k.p_backtrack, -k.logprob, k.id))
            k = branch_point(best.token_logprobs, len(best.ids))
            assert (n.forced, n.banned) == (k, best.ids[k])
            assert n.raw_ids[:k] == best.ids[:k] and n.raw_ids[k] != best.ids[k]
        assert sol.stats["tokens_generated"] == sum(len(n.raw_ids) for n in t.nodes[1:])  # prefixes count
    assert rewrites > 0
    bigger = sum(s.stats["tokens_generated"] for s in always) > sum(s.stats["tokens_generated"] for s in plain)
    assert bigger


def test_a_rewrite_tree_replays_itself(policy, head):
    for sol in _solve(policy, head, rewrite=2, rewrite_at=0.4):
        r = replay(sol.tree, 1.0)
        assert r.exact and r.answer == sol.answer
        assert [n.raw_ids for n in r.tree.nodes] == [n.raw_ids for n in sol.tree.nodes]


def test_replay_without_rewrites_says_the_rewrites_are_not_its_draws(policy, head):
    """Replaying a rewrite tree as a beam that never rewrites must not serve the rewrites as plain
    children: a plain beam's extra draws at those paths are not in the tree."""
    sols = _solve(policy, head, rewrite=2, rewrite_at=1e-9, width=1, samples=1)
    for sol in sols:
        r = replay(sol.tree, 1.0, rewrite=0, samples=3)
        assert not r.exact


def test_rewrite_knobs_are_checked():
    with pytest.raises(ValueError, match="rewrite"):
        BeamConfig(rewrite=-1)
    with pytest.raises(ValueError, match="rewrite_at"):
        BeamConfig(rewrite_at=0.0)
    with pytest.raises(ValueError, match="rewrite_at"):
        BeamConfig(rewrite_at=1.5)


def test_labelled_steps_with_rewrites_hold_the_rewrites_the_checker_asks_for(policy):
    """``collect_steps(rewrite=R)``: the step checker triggers the rewrites (here a stand-in that
    finds every step wrong: a tiny random policy writes no annotation the checker could fault), so
    the root's W×M steps are the plain run's and every beam adds R rewrites, all labelled."""
    from verifier.baselines import CheckerOracle
    from verifier.step_data import collect_steps

    class AllWrong(CheckerOracle):
        def score_steps(self, steps):
            return torch.ones(len(steps))

    problems = list(generate_problems(2, seed=5, split="test"))
    kw = dict(width=2, samples=2, temperature=1.0, seed=0, max_depth=2, max_step_tokens=10, progress=False)
    plain = collect_steps(policy, problems, **kw)
    trigger = AllWrong(policy.hidden_size)
    assert collect_steps(policy, problems, rewrite_trigger=trigger, **kw).texts == plain.texts  # no rewrite asked
    with pytest.raises(ValueError, match="rewrite_trigger"):
        collect_steps(policy, problems, rewrite=3, **kw)
    rw = collect_steps(policy, problems, rewrite=3, rewrite_trigger=trigger, **kw)
    assert len(rw) > len(plain) and len(rw.labels) == len(rw.views) == len(rw.groups)
    assert rw.texts[:4] == plain.texts[:4]  # the root's children come first, drawn alike
    sizes = {}
    for g in rw.groups:
        sizes[g] = sizes.get(g, 0) + 1
    assert 3 in sizes.values()  # a rewrite request: one sibling group of R steps
    with pytest.raises(ValueError, match="rewrite_labels"):
        from verifier.config import VerifierTrainConfig

        VerifierTrainConfig(out="x", policy="y", rewrite_labels=-1)
