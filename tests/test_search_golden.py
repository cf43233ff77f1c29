"""Golden trees: a fixed seed reproduces the recorded tree node for node (scripted engine)."""

from __future__ import annotations

import pytest
from scripted_engine import ARITH, BT, HiddenVerifier, ScriptedEngine, summary

import search

B3 = BT * 3
# beam search, width 2, 4 samples per beam, threshold 0.65, seed 6: rows are (seed path, raw step, status, answer)
GOLDEN_BEAM = [
    ((0,), "x=2\n", "expanded", None),
    ((1,), BT + "oops\n", "rejected", None),
    ((2,), "x=9" + B3 + "x=2\n", "expanded", None),
    ((3,), BT + "oops\n", "rejected", None),
    ((0, 0), "y=4\n", "expanded", None),
    ((0, 1), "#### 4\n", "terminal", "4"),
    ((0, 2), "#### 4\n", "terminal", "4"),
    ((0, 3), "#### 4\n", "terminal", "4"),
    ((2, 0), "y=4\n", "expanded", None),
    ((2, 1), "#### 4\n", "terminal", "4"),
    ((2, 2), "y=4\n", "open", None),
    ((2, 3), "y=5\n", "open", None),
    ((0, 0, 0), "#### 4\n", "terminal", "4"),
    ((0, 0, 1), "#### 4\n", "terminal", "4"),
    ((0, 0, 2), "#### 5\n", "pruned", "5"),
    ((0, 0, 3), "#### 4\n", "terminal", "4"),
    ((2, 0, 0), "#### 4\n", "terminal", "4"),
    ((2, 0, 1), "#### 5\n", "pruned", "5"),
    ((2, 0, 2), "#### 5\n", "pruned", "5"),
    ((2, 0, 3), "#### 4\n", "terminal", "4"),
]

# MCTS, 6 simulations, 2 children per expansion, threshold 0.65, seed 7
GOLDEN_MCTS = [
    ((0,), "x=2\n", "expanded", None),
    ((1,), "x=2\n", "expanded", None),
    ((0, 0), "y=5\n", "open", None),
    ((0, 1), "y=4\n", "expanded", None),
    ((1, 0), "y=5\n", "open", None),
    ((1, 1), "y=4\n", "expanded", None),
    ((0, 1, 0), "#### 4\n", "terminal", "4"),
    ((0, 1, 1), "#### 5\n", "pruned", "5"),
    ((1, 1, 0), "#### 4\n", "terminal", "4"),
    ((1, 1, 1), "#### 4\n", "terminal", "4"),
]


def test_golden_beam_tree_is_reproduced():
    # recorded with M children at the root and the last step's score (the defaults before issue 14)
    sol = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                       threshold=0.65, seed=6, width=2, samples=4, root_samples=4, aggregate="last")
    assert summary(sol.tree) == GOLDEN_BEAM
    assert sol.answer == "4" and sol.text == "x=2\ny=4\n#### 4\n"
    assert sol.tree.chosen == [0, 1, 5, 13]
    # the in-step backspace run is recorded inside its node: (raw index 3, run length 3)
    assert sol.tree.nodes[3].backtracks == ((3, 3),) and sol.tree.nodes[3].text == "x=2\n"
    assert (sol.stats["nodes_pruned"], sol.stats["nodes_rejected"], sol.stats["nodes_expanded"]) == (3, 2, 5)


def test_golden_mcts_tree_is_reproduced():
    sol = search.solve("What is x?", strategy="mcts", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                       threshold=0.65, seed=7, simulations=6, children=2)
    assert summary(sol.tree) == GOLDEN_MCTS
    assert sol.answer == "4" and sol.tree.chosen == [0, 1, 4, 7]
    assert sol.tree.nodes[0].visits == 6


def test_another_seed_gives_another_tree():
    sol = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                       threshold=0.65, seed=5, width=2, samples=4, root_samples=4, aggregate="last")
    assert summary(sol.tree) != GOLDEN_BEAM


def test_beam_root_draws_width_times_samples_children_by_default():
    sol = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                       threshold=1.0, seed=6, width=2, samples=3)
    assert len(sol.tree.children[0]) == 6
    narrow = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                          threshold=1.0, seed=6, width=2, samples=3, root_samples=3)
    assert len(narrow.tree.children[0]) == 3


@pytest.mark.parametrize("aggregate", ["last", "max", "prod"])
def test_path_aggregates_read_every_step(aggregate):
    from search.run import path_p

    sol = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                       threshold=1.0, seed=6, width=4, samples=4)
    tree = sol.tree
    nid = next(n.id for n in tree.nodes if n.depth == 2 and n.p_backtrack is not None)
    ps = [tree.nodes[a].p_backtrack for a in tree.path(nid)[1:]]

    class _Run:
        pass

    run = _Run()
    run.tree = tree
    run.p = lambda a: 0.0 if tree.nodes[a].p_backtrack is None else tree.nodes[a].p_backtrack
    want = {"last": ps[-1], "max": max(ps), "prod": 1 - (1 - ps[0]) * (1 - ps[1])}[aggregate]
    assert ps[0] != ps[1]  # the rules differ on this path
    assert path_p(run, nid, aggregate) == pytest.approx(want)
