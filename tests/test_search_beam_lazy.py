"""Beam search's lazy siblings (``accept``): each beam draws children one at a time and stops once
one scores P(error) < accept (the root once W do). Children keep the seed paths they have in the
full beam, so the lazy beam draws a subset of the full beam's children and nothing else."""

from __future__ import annotations

import pytest
import torch

import search
from policy import tiny_policy
from policy.data import generate_problems
from verifier import VerifierHead

KNOBS = dict(strategy="beam", width=2, samples=3, max_depth=3, max_step_tokens=10, temperature=1.0)


@pytest.fixture(scope="module")
def pair():
    policy = tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    torch.manual_seed(0)
    head = VerifierHead(32, width=8)
    with torch.no_grad():
        head.net[-1].weight.mul_(20.0)  # scores spread around 0.5
    return policy, head


def _solve(pair, accept=None, seed=0, n=4):
    policy, head = pair
    problems = list(generate_problems(n, seed=3, split="test"))
    return search.solve_many([p.question for p in problems], policy=policy, verifier=head, seed=seed, threshold=1.0,
                             accept=accept, **KNOBS)


def _texts_by_path(sol):
    return {n.seed_path: n.raw_text for n in sol.tree.nodes}


@pytest.mark.parametrize("seed", [0, 1])
def test_accepting_nothing_draws_the_full_beam(pair, seed):
    """No child ever scores below ``accept``: every node draws its whole quota one by one — the same
    children, the same answer, the same tokens as the full beam."""
    full, lazy = _solve(pair, None, seed), _solve(pair, 1e-12, seed)
    for f, z in zip(full, lazy, strict=True):
        assert _texts_by_path(f) == _texts_by_path(z)
        assert (f.answer, f.tree.chosen) == (z.answer, z.tree.chosen)
        assert f.stats["tokens_generated"] == z.stats["tokens_generated"]


@pytest.mark.parametrize("accept", [0.5, 1.0])
def test_lazy_children_are_the_full_beams_children_at_their_paths(pair, accept):
    full, lazy = _solve(pair), _solve(pair, accept)
    drawn = 0
    for f, z in zip(full, lazy, strict=True):
        mine, theirs = _texts_by_path(z), _texts_by_path(f)
        root = z.tree.nodes[0]
        for n in z.tree.nodes[1:]:
            if n.seed_path in theirs:  # a child of a node the full beam also expanded
                assert n.raw_text == theirs[n.seed_path]
        kids = [z.tree.nodes[c] for c in z.tree.children[root.id]]
        ok = sum(1 for k in kids if k.status in ("open", "expanded", "terminal") and k.p_backtrack < accept)
        assert len(kids) == 6 or ok >= 2  # the root stops once W children are accepted, else at W x M
        for node in z.tree.nodes[1:]:  # a beam stops drawing at its first accepted child
            kids = [z.tree.nodes[c] for c in z.tree.children[node.id]]
            if kids:
                firsts = [k.p_backtrack < accept and k.status != "rejected" for k in kids[:-1]]
                assert not any(firsts) and len(kids) <= 3
        drawn += len(mine) - 1
        assert z.stats["tokens_generated"] <= f.stats["tokens_generated"]
    assert drawn < sum(len(f.tree.nodes) - 1 for f in full)  # it does skip siblings
    if accept == 1.0:  # every scored child is accepted: one child per beam, W at the root
        for z in lazy:
            assert len(z.tree.children[0]) == 2


def test_a_lazy_beam_replays_itself_and_a_full_one_says_what_it_lacks(pair):
    """``search.replay`` of a lazy tree at its ``accept`` is exact and reaches its outcome; a full
    beam's tree replayed as lazy ends (a node whose next child is not recorded stops asking) and
    names the nodes whose children it lacks — the lazy beam keeps other nodes than the full one."""
    full, lazy = _solve(pair), _solve(pair, 0.5)
    for f, z in zip(full, lazy, strict=True):
        r = search.replay(z.tree, 1.0)
        assert r.exact and r.answer == z.answer and r.stats["tokens_generated"] == z.stats["tokens_generated"]
        r = search.replay(f.tree, 1.0, accept=0.5)
        assert r.exact or all(0 <= m < len(f.tree.nodes) for m in r.missing)
    assert not all(search.replay(f.tree, 1.0, accept=0.5).exact for f in full)


def test_accept_is_checked():
    from search.config import BeamConfig

    for bad in (0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="accept"):
            BeamConfig(accept=bad)
    with pytest.raises(ValueError, match="keep_last"):
        BeamConfig(accept=0.5, keep_last=True, threshold=0.8)
