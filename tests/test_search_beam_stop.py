"""Beam search's early stop is exact: with aggregate max or prod it returns the answer the full
search returns, and it only saves rounds (tokens)."""

import pytest
from scripted_engine import HiddenVerifier, ScriptedEngine, Step

import search

# "a" finishes after two steps with a low error score; "e" finishes later with a lower one (the full
# search returns it, so a stop must wait for it); "b" runs on with a high one
TABLE = {
    "": [Step("a=1\n", 1.0, p=0.05), Step("b=1\n", 1.0, p=0.30), Step("e=1\n", 1.0, p=0.01)],
    "a=1\n": [Step("#### 1\n", 1.0, p=0.02), Step("a=2\n", 1.0, p=0.4)],
    "a=1\na=2\n": [Step("#### 2\n", 1.0, p=0.1)],
    "b=1\n": [Step("c=2\n", 1.0, p=0.2), Step("#### 7\n", 1.0, p=0.6)],
    "e=1\n": [Step("c=2\n", 1.0, p=0.01)],
    "*": [Step("d=3\n", 1.0, p=0.05), Step("#### 3\n", 1.0, p=0.01)],
}


def _solve(seed, aggregate, early_stop):
    return search.solve("What is x?", strategy="beam", policy=ScriptedEngine(dict(TABLE)), verifier=HiddenVerifier(),
                        threshold=1.0, seed=seed, width=3, samples=2, aggregate=aggregate, early_stop=early_stop,
                        max_depth=8)


@pytest.mark.parametrize("aggregate", ["max", "prod"])
def test_early_stop_returns_the_same_answer_with_fewer_tokens(aggregate):
    saved = 0
    for seed in range(24):
        full, early = _solve(seed, aggregate, False), _solve(seed, aggregate, True)
        assert (early.answer, early.text) == (full.answer, full.text), f"seed {seed}"
        assert early.stats["tokens_generated"] <= full.stats["tokens_generated"]
        saved += early.stats["tokens_generated"] < full.stats["tokens_generated"]
        stopped = [n for n in early.tree.nodes if "early stop" in (n.reason or "")]
        assert bool(stopped) == (early.stats["tokens_generated"] < full.stats["tokens_generated"])
    assert saved >= 3, "the early stop never fired: the test would not see a wrong answer"


def test_early_stop_is_off_for_the_last_step_rule():
    for seed in range(8):
        a, b = _solve(seed, "last", True), _solve(seed, "last", False)
        assert a.stats["tokens_generated"] == b.stats["tokens_generated"]


def test_the_early_stop_study_compares_answers_and_tokens():
    from experiments.studies.early_stop import compare

    ours = [{"problem_id": "a", "answer": "1", "correct": True, "stats": {"tokens_generated": 60}},
            {"problem_id": "b", "answer": "2", "correct": False, "stats": {"tokens_generated": 100}}]
    ref = {"a": {"answer": "1", "correct": True, "stats": {"tokens_generated": 100}},
           "b": {"answer": "3", "correct": False, "stats": {"tokens_generated": 100}}}
    c = compare(ours, ref)
    assert (c["n"], c["same_answer"], c["fewer_tokens"], c["correct"]) == (2, 1, 1, 1)
    assert c["saved"] == pytest.approx(0.2)
