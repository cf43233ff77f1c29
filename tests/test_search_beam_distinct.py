"""Beam search's ``distinct``: open siblings that are the same step count once, so the W beams are
W different paths; without it the beam keeps copies (measured on the demo: 57% of its beams)."""

from collections import Counter

import pytest
from scripted_engine import HiddenVerifier, ScriptedEngine, Step

import search

TABLE = {
    "": [Step("a=1\n", 6.0, p=0.05), Step("b=1\n", 1.0, p=0.2), Step("c=1\n", 1.0, p=0.3)],
    "*": [Step("d=3\n", 3.0, p=0.05), Step("#### 3\n", 1.0, p=0.01)],
}


def _solve(seed, distinct):
    engine = ScriptedEngine(dict(TABLE))
    sol = search.solve("What is x?", strategy="beam", policy=engine, verifier=HiddenVerifier(), threshold=1.0,
                       seed=seed, width=3, samples=2, distinct=distinct, max_depth=6)
    return sol, engine


def _beams(sol):
    """(depth, path text) of every node the beam expanded."""
    t = sol.tree
    return [(n.depth, "".join(t.nodes[a].text for a in t.path(n.id))) for n in t.nodes
            if n.id != 0 and n.status == "expanded"]


def test_distinct_beams_are_different_paths_and_release_the_copies():
    copies_without = 0
    for seed in range(12):
        plain, _ = _solve(seed, False)
        copies_without += sum(k - 1 for k in Counter(_beams(plain)).values())
        sol, engine = _solve(seed, True)
        beams = _beams(sol)
        assert len(beams) == len(set(beams)), f"seed {seed}: a path kept twice: {beams}"
        dropped = [n for n in sol.tree.nodes if (n.reason or "").startswith("the same step as node")]
        for n in dropped:  # the copy it names is a sibling with the same tokens
            first = sol.tree.nodes[int(n.reason.rsplit(" ", 1)[1])]
            assert (first.parent, first.ids) == (n.parent, n.ids) and first.id != n.id
        assert not engine.live, "a dropped copy kept its KV handle"
        assert sol.answer == "3"
    assert copies_without >= 6, "the table never drew copies: the test could not see them kept"


def test_one_distinct_step_means_one_beam_next_round():
    table = {"": [Step("a=1\n")], "a=1\n": [Step("#### 1\n")]}
    tokens = {}
    for distinct in (False, True):
        sol = search.solve("What is x?", strategy="beam", policy=ScriptedEngine(dict(table)), verifier=HiddenVerifier(),
                           threshold=1.0, width=3, samples=2, distinct=distinct)
        assert sol.answer == "1"
        tokens[distinct] = sol.stats["tokens_generated"]
    # the root draws 3 x 2 copies of "a=1\n" (4 tokens); then 3 beams x 2 or 1 beam x 2 answers (7 tokens)
    assert tokens == {False: 6 * 4 + 6 * 7, True: 6 * 4 + 2 * 7}


def test_distinct_must_be_a_bool():
    with pytest.raises(ValueError, match="distinct"):
        search.solve("What is x?", strategy="beam", policy=ScriptedEngine(dict(TABLE)), verifier=HiddenVerifier(),
                     distinct="yes")
