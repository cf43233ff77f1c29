"""``experiments.studies.beam_losses``: hand-built beam trees, each lost in one known place, are
classified there."""

from __future__ import annotations

import pytest

from experiments.studies.beam_losses import classify, path_errors, summarize
from search.tree import ROOT, Tree

Q = "Question: Ann has 3 bags of 4 pens. She gives away 2 pens. How many pens does she have?\nAnswer: "
RIGHT1 = "She has 3*4=<<3*4=12>>12 pens.\n"
WRONG1 = "She has 3*4=<<3*4=13>>13 pens.\n"
RIGHT2 = "Then 12-2=<<12-2=10>>10 pens.\n"
WRONG2 = "Then 12-2=<<12-2=9>>9 pens.\n"
GOLD = "10"


def _tree() -> Tree:
    t = Tree(question="q")
    t.add_root((1,), Q)
    return t


def _child(t: Tree, parent: int, text: str, *, p: float, status: str = "open", answer: str | None = None,
           chosen: bool = False) -> int:
    nid = t.add_child(parent, ids=(2,), raw_ids=(2,), text=text, raw_text=text, p_backtrack=p, status=status,
                      answer=answer, stop_reason="eos" if answer is not None else "newline")
    if chosen:
        t.chosen = t.path(nid)
    return nid


def test_path_errors_carry_a_wrong_step_down_the_path():
    t = _tree()
    a = _child(t, ROOT, RIGHT1, p=0.1, status="expanded")
    b = _child(t, ROOT, WRONG1, p=0.2, status="expanded")
    a2 = _child(t, a, RIGHT2, p=0.1)
    b2 = _child(t, b, "Then 13-2=<<13-2=11>>11 pens.\n", p=0.1)  # right on its own, wrong by its parent
    assert path_errors(t) == [False, False, True, False, True]
    assert [a2, b2] == [3, 4]


def test_solved_and_pick():
    t = _tree()
    a = _child(t, ROOT, RIGHT1, p=0.1, status="expanded")
    _child(t, a, RIGHT2 + "#### 10", p=0.1, status="terminal", answer="10", chosen=True)
    assert classify(t, GOLD)["kind"] == "solved"
    t = _tree()
    a = _child(t, ROOT, RIGHT1, p=0.1, status="expanded")
    _child(t, a, RIGHT2 + "#### 10", p=0.6, status="terminal", answer="10")
    _child(t, a, WRONG2 + "#### 9", p=0.2, status="terminal", answer="9", chosen=True)
    assert classify(t, GOLD)["kind"] == "pick"


def test_dropped_when_the_beam_goes_on_with_wrong_paths_only():
    t = _tree()
    right = _child(t, ROOT, RIGHT1, p=0.7)  # not kept: open, no children
    wrong = _child(t, ROOT, WRONG1, p=0.3, status="expanded")
    _child(t, wrong, "Then 13-2=<<13-2=11>>11 pens.\n#### 11", p=0.1, status="terminal", answer="11", chosen=True)
    c = classify(t, GOLD)
    assert c == {"kind": "dropped", "depth": 1, "p_right": 0.7, "p_kept": 0.3}
    assert right == 1
    # the same tree, but the right step was also kept and drew only wrong children: coverage, not the ranking
    t.update(right, status="expanded")
    _child(t, right, WRONG2 + "#### 9", p=0.5, status="terminal", answer="9")
    assert classify(t, GOLD) == {"kind": "coverage", "depth": 2, "p_right": None, "p_kept": None}


def test_invisible_and_coverage():
    t = _tree()  # a wrong operand (3 is in the question) the checker cannot see, to a wrong answer
    a = _child(t, ROOT, RIGHT1, p=0.1, status="expanded")
    _child(t, a, "Then 12-3=<<12-3=9>>9 pens.\n#### 9", p=0.1, status="terminal", answer="9", chosen=True)
    assert path_errors(t) == [False, False, False]
    assert classify(t, GOLD) == {"kind": "invisible", "depth": 2, "p_right": None, "p_kept": None}
    t = _tree()  # the root drew only wrong steps
    w = _child(t, ROOT, WRONG1, p=0.1, status="expanded")
    _child(t, w, "Then 13-2=<<13-2=11>>11 pens.\n#### 11", p=0.1, status="terminal", answer="11", chosen=True)
    assert classify(t, GOLD) == {"kind": "coverage", "depth": 1, "p_right": None, "p_kept": None}
    t = _tree()  # no answer at all counts as lost too
    _child(t, ROOT, RIGHT1, p=0.1, status="pruned")
    assert classify(t, GOLD) == {"kind": "dropped", "depth": 1, "p_right": 0.1, "p_kept": None}


def test_summarize_counts_every_kind():
    cases = [{"kind": "solved", "depth": None, "p_right": None, "p_kept": None},
             {"kind": "dropped", "depth": 2, "p_right": 0.8, "p_kept": 0.1},
             {"kind": "dropped", "depth": 4, "p_right": 0.6, "p_kept": 0.3},
             {"kind": "coverage", "depth": 3, "p_right": None, "p_kept": None}]
    s = summarize(cases)
    assert s["n"] == 4 and s["counts"] == {"solved": 1, "pick": 0, "dropped": 2, "invisible": 0, "coverage": 1}
    assert s["dropped_median_depth"] == 3 and s["dropped_median_p_right"] == pytest.approx(0.7)
    assert s["dropped_median_p_kept"] == pytest.approx(0.2)


def test_rewrite_events_count_firings_right_rewrites_and_whether_the_ranking_kept_them():
    from experiments.studies.beam_losses import rewrite_events

    t = _tree()
    # root: both drawn children wrong, rewrites fired; one rewrite right and expanded (kept)
    w1, w2 = _child(t, ROOT, WRONG1, p=0.9, status="expanded"), _child(t, ROOT, WRONG1, p=0.8)
    kept = t.add_child(ROOT, ids=(2,), raw_ids=(2,), text=RIGHT1, raw_text=RIGHT1, p_backtrack=0.4, status="expanded",
                       stop_reason="newline", forced=3, banned=7)
    t.add_child(ROOT, ids=(2,), raw_ids=(2,), text=WRONG1, raw_text=WRONG1, p_backtrack=0.6, stop_reason="newline",
                forced=3, banned=7)
    # the kept rewrite: drawn children all wrong, nothing fired (missed)
    _child(t, kept, WRONG2, p=0.3)
    _child(t, kept, WRONG2, p=0.2)
    # below a wrong node nothing counts (not a right path)
    _child(t, w1, RIGHT2, p=0.1)
    assert w2 == 2
    c = rewrite_events(t)
    assert dict(c) == {"right_parents": 2, "all_wrong": 2, "fired": 1, "fired_all_wrong": 1, "missed": 1,
                       "right_drawn": 1, "right_kept": 1}
    # the same right rewrite left open with no children: drawn, not kept
    import dataclasses

    t.nodes[kept] = dataclasses.replace(t.nodes[kept], status="open")
    t.children[kept] = []
    c = rewrite_events(t)
    assert (c["right_drawn"], c["right_kept"], c["right_parents"], c["missed"]) == (1, 0, 1, 0)
