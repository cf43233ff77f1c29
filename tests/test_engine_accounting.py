"""Search reads its KV byte figures from the engine's store (one bookkeeping, not two)."""

import pytest
from test_generate import lively_policy

import search

QS = ["Tom has 3 apples and buys 4 more. How many?", "What is 6 times 7?"]
KW = dict(threshold=1.0, max_depth=3, max_step_tokens=8, seed=0)


@pytest.mark.parametrize("share_kv", [True, False])
@pytest.mark.parametrize("strategy", ["beam", "mcts"])
def test_search_stats_equal_the_engines_store_figures(strategy, share_kv):
    p = lively_policy(seed=3)
    engine = p.engine(share_kv=share_kv)
    shape = dict(width=2, samples=2) if strategy == "beam" else dict(simulations=6, children=2)
    sols = search.solve_many(QS, strategy=strategy, policy=engine, **shape, **KW)
    store = engine.store
    peaks = [s.stats["peak_kv_bytes"] for s in sols]
    assert all(pk > 0 for pk in peaks)
    # every problem's peak is its owner's peak in the store; together they bound the store's own
    by_owner = sorted(store.owner_peaks().values())
    assert sorted(peaks) == by_owner
    assert max(peaks) <= store.peak_bytes <= sum(peaks)
    assert store.bytes == 0, "every node was released and its KV freed"


def test_one_problem_peak_is_the_stores_peak():
    p = lively_policy(seed=4)
    engine = p.engine()
    sol = search.solve(QS[0], strategy="beam", policy=engine, width=2, samples=2, **KW)
    assert sol.stats["peak_kv_bytes"] == engine.peak_kv_bytes > 0
