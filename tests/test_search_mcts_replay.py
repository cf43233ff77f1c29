"""MCTS finds the best arm of a scripted bandit; replay at another threshold matches live runs."""

from __future__ import annotations

import pytest
from scripted_engine import BT, HiddenVerifier, ScriptedEngine, Step

import search
from search.strategies import puct_score

Q = "Which arm?"
# three arms; the prior (step probability) favours A, the verifier's value favours B
BANDIT = {
    "": [Step("pull A\n", 6, 0.0), Step("pull B\n", 1, 0.0), Step("pull C\n", 3, 0.0)],
    "pull A\n": [Step("#### A\n", 1, 0.6)],  # value 0.4
    "pull B\n": [Step("#### B\n", 1, 0.1)],  # value 0.9
    "pull C\n": [Step("#### C\n", 1, 0.5)],  # value 0.5
}


def _arm_visits(sol: search.Solution) -> dict[str, int]:
    visits: dict[str, int] = {}
    for c in sol.tree.children[0]:
        node = sol.tree.nodes[c]
        visits[node.text] = visits.get(node.text, 0) + node.visits
    return visits


def test_mcts_finds_the_best_arm():
    sol = search.solve(Q, strategy="mcts", policy=ScriptedEngine(BANDIT), verifier=HiddenVerifier(),
                       threshold=1.0, simulations=48, children=12, seed=0)
    visits = _arm_visits(sol)
    assert set(visits) == {"pull A\n", "pull B\n", "pull C\n"}  # every arm was drawn at the root
    assert sol.answer == "B"
    assert visits["pull B\n"] > max(visits["pull A\n"], visits["pull C\n"])
    assert sol.tree.nodes[0].visits == 48
    # greedy follows the prior to arm A; a huge exploration constant makes MCTS follow it too
    assert search.solve(Q, strategy="greedy", policy=ScriptedEngine(BANDIT), threshold=1.0).answer == "A"
    prior_led = search.solve(Q, strategy="mcts", policy=ScriptedEngine(BANDIT), verifier=HiddenVerifier(),
                             threshold=1.0, simulations=48, children=12, seed=0, c_puct=1000.0)
    assert prior_led.answer == "A"


def test_mcts_never_selects_pruned_arms():
    sol = search.solve(Q, strategy="mcts", policy=ScriptedEngine(BANDIT), verifier=HiddenVerifier(),
                       threshold=0.55, simulations=30, children=12, seed=0)
    assert sol.answer == "B"
    pruned = [n for n in sol.tree.nodes if n.status == "pruned"]
    assert pruned and all(n.visits == 0 for n in pruned) and all(n.answer == "A" for n in pruned)


def test_puct_score():
    assert puct_score(0.5, 0.2, 16, 3, 1.5) == pytest.approx(0.5 + 1.5 * 0.2 * 4 / 4)
    assert puct_score(0.0, 1.0, 0, 0, 1.0) == pytest.approx(1.0)  # sqrt(max(N, 1)): the prior counts at once


STRATEGY_KNOBS = [
    ("beam", {"width": 2, "samples": 3}),
    ("beam", {"width": 1, "samples": 3, "rank": "logprob"}),
    ("best_of_n", {"n": 6}),
    ("greedy", {"retries": 2}),
    ("mcts", {"simulations": 10, "children": 3}),
]
# likely steps score badly here, so a lower threshold makes every strategy draw or keep other steps
MIXED = {
    "": [Step("u\n", 4, 0.6), Step("v\n", 2, 0.2), Step("w\n", 1, 0.4), Step(BT + "no\n", 1, 0.0)],
    "u\n": [Step("#### 1\n", 3, 0.5), Step("k\n", 1, 0.1)],
    "v\n": [Step("#### 2\n", 1, 0.3), Step("m\n", 2, 0.7)],
    "w\n": [Step("#### 3\n", 1, 0.1)],
    "*": [Step("#### 9\n", 1, 0.35), Step("z\n", 1, 0.05)],
}
THRESHOLDS = [0.0, 0.15, 0.25, 0.45, 0.55, 0.65, 0.75, 1.0]


def _live(strategy, threshold, knobs, seed):
    return search.solve("What is x?", strategy=strategy, policy=ScriptedEngine(MIXED), verifier=HiddenVerifier(),
                        threshold=threshold, seed=seed, max_depth=6, **knobs)


@pytest.mark.parametrize("strategy, knobs", STRATEGY_KNOBS)
def test_replay_matches_live_runs_or_says_where_it_cannot(strategy, knobs):
    exact_seen = inexact_seen = 0
    for seed in (0, 6):
        recorded = _live(strategy, 1.0, knobs, seed)
        same = search.replay(recorded.tree, 1.0)
        assert same.exact and same.tree.nodes == recorded.tree.nodes and same.answer == recorded.answer
        for tau in THRESHOLDS:
            result = search.replay(recorded.tree, tau)
            live = _live(strategy, tau, knobs, seed)
            if result.exact:
                exact_seen += 1
                assert result.tree.nodes == live.tree.nodes  # every node, status, score and visit count
                assert result.answer == live.answer and result.tree.chosen == live.tree.chosen
                assert result.stats["reason"] == live.stats["reason"]
                assert result.stats["nodes_expanded"] == live.stats["nodes_expanded"]
            else:
                inexact_seen += 1
                recorded_paths = {n.seed_path for n in recorded.tree.nodes}
                assert any(n.seed_path not in recorded_paths for n in live.tree.nodes)  # it was right to refuse
                assert all(0 <= m < len(recorded.tree) for m in result.missing)
                assert all(recorded.tree.nodes[m].status in ("expanded", "open", "pruned") for m in result.missing)
    assert exact_seen > 0
    if strategy == "greedy" or knobs.get("rank") == "logprob":
        # they draw replacements for what a lower threshold prunes, which the recorded run never drew
        assert inexact_seen > 0


def test_replay_survives_a_json_round_trip_and_bad_input():
    recorded = _live("beam", 0.9, {"width": 2, "samples": 3}, 6)
    tree = search.Tree.from_dict(recorded.tree.to_dict())
    result = search.replay(tree, 0.5)
    assert result.exact and result.answer == _live("beam", 0.5, {"width": 2, "samples": 3}, 6).answer
    with pytest.raises(ValueError, match="threshold"):
        search.replay(tree, 2.0)
    with pytest.raises(ValueError, match="unknown knob"):
        search.replay(tree, 0.5, simulations=3)
    with pytest.raises(ValueError, match="strategy"):
        search.replay(search.Tree(question="q"), 0.5)
