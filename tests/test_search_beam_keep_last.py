"""Beam search's ``keep_last``: a round whose children are all pruned, while no answer exists, keeps
its best pruned child, so the threshold drops alternatives but never leaves the search with nothing
(measured on the demo policy: without it the pruned beam ends with no answer on 6-59% of problems)."""

import pytest
from scripted_engine import HiddenVerifier, ScriptedEngine, Step

import search


def _doubted():
    """Three steps then an answer, every step suspicious (p = 0.9 >= 0.5): at threshold 0.5 every
    child of every round is pruned. Answers come only at depth 3, so every path is as long."""
    first = [Step("a=1\n", 3.0, p=0.9), Step("b=2\n", 2.0, p=0.9), Step("c=3\n", 1.0, p=0.9)]
    second = [Step("d=4\n", 2.0, p=0.9), Step("e=5\n", 1.0, p=0.9)]
    table = {"": first}
    for f in first:
        table[f.text] = second
        for s in second:
            table[f.text + s.text] = [Step(f"#### {f.text[2]}{s.text[2]}\n", w, p=0.9) for w in (1.0, 2.0)]
    return table


DOUBTED = _doubted()


def _beam(table, seed, **knobs):
    engine = ScriptedEngine(dict(table))
    sol = search.solve("What is x?", strategy="beam", policy=engine, verifier=HiddenVerifier(), seed=seed,
                       max_depth=8, **knobs)
    return sol, engine


def _chosen_text(sol):
    return "".join(sol.tree.nodes[n].text for n in sol.tree.chosen)


def test_without_keep_last_everything_pruned_means_no_answer():
    sol, engine = _beam(DOUBTED, 0, threshold=0.5, width=4, samples=2)
    assert sol.answer is None and sol.stats["reason"] == "all_pruned"
    assert not engine.live


@pytest.mark.parametrize("seed", range(8))
def test_keep_last_when_all_pruned_is_the_beam_of_width_one(seed):
    """With every child pruned and P equal everywhere, the kept child is the best by path log-prob:
    exactly the beam that keeps one path (width 1, the root still drawing W×M) at threshold 1."""
    kept, engine = _beam(DOUBTED, seed, threshold=0.5, width=4, samples=2, keep_last=True)
    ref, _ = _beam(DOUBTED, seed, threshold=1.0, width=1, samples=2, root_samples=8, rank="logprob")
    assert kept.answer is not None and kept.stats["reason"] == "answer"
    assert (kept.answer, _chosen_text(kept)) == (ref.answer, _chosen_text(ref))
    assert kept.stats["tokens_generated"] == ref.stats["tokens_generated"]
    revived = [n for n in kept.tree.nodes if (n.reason or "").startswith("kept although pruned")]
    assert revived and all(n.id in kept.tree.chosen for n in revived)
    assert not engine.live, "a pruned child kept its KV handle past its round"


def test_keep_last_changes_nothing_while_something_survives():
    """Where the plain pruned beam finds an answer, keep_last builds the same tree (it acts only
    when a round leaves nothing and no answer exists); where the plain beam found none, it finds one."""
    table = {
        "": [Step("a=1\n", 1.0, p=0.1), Step("b=2\n", 1.0, p=0.9)],
        "*": [Step("d=4\n", 1.0, p=0.1), Step("e=5\n", 1.0, p=0.95), Step("#### 4\n", 1.0, p=0.1)],
    }
    same = rescued = 0
    for seed in range(12):
        plain, _ = _beam(table, seed, threshold=0.5, width=2, samples=2)
        kept, engine = _beam(table, seed, threshold=0.5, width=2, samples=2, keep_last=True)
        assert not engine.live
        if plain.answer is not None:
            assert [(n.text, n.status, n.reason) for n in kept.tree.nodes] == \
                   [(n.text, n.status, n.reason) for n in plain.tree.nodes]
            assert kept.answer == plain.answer
            same += 1
        else:
            assert kept.answer is not None
            rescued += 1
    assert same >= 3 and rescued >= 1, (same, rescued)


def test_a_revived_answer_step_ends_the_search():
    table = {"": [Step("#### 7\n", 1.0, p=0.95)]}
    sol, engine = _beam(table, 0, threshold=0.5, width=2, samples=2, keep_last=True)
    assert sol.answer == "7" and sol.stats["reason"] == "answer"
    node = sol.tree.nodes[sol.tree.chosen[-1]]
    assert node.status == "terminal" and node.p_backtrack == pytest.approx(0.95)
    assert not engine.live


def test_keep_last_must_be_a_bool():
    with pytest.raises(ValueError, match="keep_last"):
        _beam(DOUBTED, 0, keep_last="yes")
