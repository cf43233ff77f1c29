"""Runaway guards (issue 11 §5): ⟨b⟩ loops, search budgets, and the KV memory guard — on a tiny
random policy through the real engine."""

from __future__ import annotations

import pytest
import torch

import search
from policy import tiny_policy
from policy.engine import RewindEngine
from policy.generate import generate
from search.config import make_config

Q = "Tom has 3 apples and buys 2 more. How many apples?"
KW = dict(threshold=1.0, max_depth=4, max_step_tokens=12)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)


# ---- ⟨b⟩ loops --------------------------------------------------------------------------------
def test_backtrack_loop_stops_at_the_cap_and_says_so(policy):
    """A huge ⟨b⟩ bias makes every token ⟨b⟩; the per-sequence cap stops the loop and is reported."""
    g = generate(policy, ["Q: 1+1?\n"], backtrack_bias=1e4, max_backtracks=5, max_backtracks_per_step=100,
                 max_new_tokens=40)[0]
    assert g.raw_ids.count(policy.backtrack_id) == 5
    assert g.backtrack_cap_hit
    assert g.surplus_backtracks >= 1  # the first ⟨b⟩ had nothing to delete: the prompt is never deleted
    assert len(g.raw_ids) <= 40


def test_backtrack_loop_per_step_cap(policy):
    g = generate(policy, ["Q: 1+1?\n"], backtrack_bias=1e4, max_backtracks=64, max_backtracks_per_step=3,
                 max_new_tokens=30)[0]
    # within any one line at most 3 ⟨b⟩
    runs, current = [], 0
    for t in g.raw_ids:
        if t == policy.backtrack_id:
            current += 1
        elif "\n" in policy.tokenizer.decode([t]):
            runs.append(current)
            current = 0
    runs.append(current)
    assert max(runs) <= 3
    assert not g.backtrack_cap_hit and len(g.raw_ids) <= 30


def test_engine_steps_with_huge_bias_end(policy):
    """In search, the engine's per-step ⟨b⟩ cap bounds a step even when ⟨b⟩ always wins."""
    engine = RewindEngine(policy, backtrack_bias=1e4, max_backtracks_per_step=4)
    sol = search.solve(Q, strategy="greedy", policy=engine, **KW)
    for node in sol.tree.nodes[1:]:
        assert node.raw_ids.count(policy.backtrack_id) <= 4
        assert len(node.raw_ids) <= KW["max_step_tokens"]


# ---- search budgets ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["beam", "mcts", "best_of_n"])
@pytest.mark.parametrize(("knob", "reason"), [({"max_nodes": 3}, "max_nodes"), ({"max_tokens": 4}, "max_tokens"),
                                              ({"time_limit_s": 0.0}, "time_limit"),
                                              ({"max_kv_bytes": 1}, "max_kv_bytes")])
def test_budget_gives_no_answer_and_the_reason(policy, strategy, knob, reason):
    sol = search.solve(Q, strategy=strategy, policy=policy, **KW, **knob)
    assert sol.answer is None and sol.text is None
    assert sol.stats["reason"] == reason
    if "max_nodes" in knob:
        assert sol.stats["nodes"] <= 3


def test_budget_hit_by_one_problem_spares_the_batch(policy):
    small, big = search.solve_many([Q, Q + " And 4 more?"], strategy="beam", policy=policy, width=2, samples=2,
                                   **KW)
    limited = search.solve_many([Q, Q + " And 4 more?"], strategy="beam", policy=policy, width=2, samples=2,
                                max_kv_bytes=big.stats["peak_kv_bytes"] - 1, **KW)
    assert small.stats["peak_kv_bytes"] < big.stats["peak_kv_bytes"]  # else the budget below spares both
    # the budget is per problem: the small one runs as it did without it, the big one no further
    lim_small, lim_big = limited
    assert lim_big.stats["peak_kv_bytes"] <= big.stats["peak_kv_bytes"]
    assert lim_big.stats["reason"] in ("max_kv_bytes", big.stats["reason"])
    assert (lim_small.answer, lim_small.stats["reason"], lim_small.tree.chosen) == \
        (small.answer, small.stats["reason"], small.tree.chosen)


# ---- the engine's KV memory guard ----------------------------------------------------------------
def test_engine_refuses_expansion_over_max_kv_bytes(policy):
    engine = RewindEngine(policy, max_kv_bytes=1)
    from search.interfaces import StepRequest

    prompt = engine.start([Q])[0]
    with pytest.raises(MemoryError, match="max_kv_bytes=1"):
        engine.expand([StepRequest(state=prompt.state, seeds=(0,), depth=0)], temperature=0.0)


@pytest.mark.parametrize("strategy", ["beam", "mcts", "greedy"])
def test_engine_memory_error_becomes_a_per_problem_answer_none(policy, strategy):
    """The engine's limit is shared by the batch: search gives up the problem holding the most KV
    (answer None, reason max_kv_bytes) instead of crashing, and the engine's KV is all freed."""
    free = RewindEngine(policy)
    ref = search.solve_many([Q, "Q?"], strategy=strategy, policy=free, **KW)
    engine = RewindEngine(policy, max_kv_bytes=1)
    sols = search.solve_many([Q, "Q?"], strategy=strategy, policy=engine, **KW)
    assert [s.answer for s in sols] == [None, None]
    assert [s.stats["reason"] for s in sols] == ["max_kv_bytes", "max_kv_bytes"]
    assert engine.kv_bytes == 0 and free.kv_bytes == 0
    assert all(r.stats["reason"] != "max_kv_bytes" for r in ref)


def test_engine_limit_between_spares_the_small_problem(policy):
    """With a limit above what the short problem needs alone but below both together, the long
    problem (more KV) is given up and the short one still finishes as without a limit."""
    long_q = Q + " " + "She then buys 7 more pears and 9 plums, and gives away half." * 3
    alone = search.solve("Q?", strategy="greedy", policy=RewindEngine(policy), **KW)
    engine = RewindEngine(policy, max_kv_bytes=alone.stats["peak_kv_bytes"] + 1)
    short, long = search.solve_many(["Q?", long_q], strategy="greedy", policy=engine, **KW)
    assert long.answer is None and long.stats["reason"] == "max_kv_bytes"
    assert short.stats["reason"] == alone.stats["reason"]
    assert [n.raw_ids for n in short.tree.nodes] == [n.raw_ids for n in alone.tree.nodes]
    assert engine.kv_bytes == 0


def test_max_kv_bytes_knob_is_validated():
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_kv_bytes"):
            make_config("beam", max_kv_bytes=bad)
    with pytest.raises(ValueError, match="max_kv_bytes must be > 0"):
        RewindEngine(tiny_policy(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), max_kv_bytes=0)


def test_nan_logits_are_an_error_not_a_silent_answer(policy):
    broken = tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    with torch.no_grad():
        broken.model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN/inf logits"):
        generate(broken, ["Q: 1+1?\n"], max_new_tokens=4)
