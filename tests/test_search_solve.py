"""search.solve / solve_many on the scripted engine: pruning thresholds, KV release, budgets,
per-node seeding, batching across problems, accounting and bad input."""

from __future__ import annotations

import pytest
from scripted_engine import ARITH, HiddenVerifier, ScriptedEngine, Step, summary

import search
from search.seeding import child_seed

Q = "What is x?"
KNOBS = {
    "greedy": {},
    "best_of_n": {"n": 4},
    "beam": {"width": 2, "samples": 3},
    "mcts": {"simulations": 8, "children": 3},
}
# every step scores high but below 1: threshold 1 must keep them all
HIGH = {"": [Step("a\n", 1, 0.97), Step("b\n", 1, 0.99)], "a\n": [Step("#### 1\n", 1, 0.98)],
        "b\n": [Step("#### 2\n", 1, 0.995)]}


@pytest.mark.parametrize("strategy", sorted(KNOBS))
def test_threshold_zero_expands_nothing_past_the_root(strategy):
    engine = ScriptedEngine(ARITH)
    sol = search.solve(Q, strategy=strategy, threshold=0.0, policy=engine, verifier=HiddenVerifier(),
                       **KNOBS[strategy])
    assert sol.answer is None and sol.stats["reason"] in ("all_pruned", "all_rejected")
    assert sol.stats["nodes_expanded"] == 1
    assert all(p == "" for call in engine.calls for p in call["prefixes"])  # only the root was expanded
    assert all(n.depth == 1 and n.status in ("pruned", "rejected") for n in sol.tree.nodes[1:])
    assert not engine.live  # every KV handle was released


@pytest.mark.parametrize("strategy", sorted(KNOBS))
def test_threshold_one_prunes_nothing(strategy):
    engine = ScriptedEngine(HIGH)
    sol = search.solve(Q, strategy=strategy, threshold=1.0, policy=engine, verifier=HiddenVerifier(),
                       **KNOBS[strategy])
    assert sol.stats["nodes_pruned"] == 0 and sol.answer in ("1", "2")
    assert search.solve(Q, strategy=strategy, threshold=0.96, policy=ScriptedEngine(HIGH), verifier=HiddenVerifier(),
                        **KNOBS[strategy]).answer is None


def test_pruned_nodes_release_their_kv_before_the_next_round():
    engine = ScriptedEngine(ARITH)
    sol = search.solve(Q, strategy="beam", threshold=0.65, policy=engine, verifier=HiddenVerifier(), seed=6,
                       width=1, samples=4)
    first, second = [i for i, e in enumerate(engine.events) if e[0] == "expand"][:2]
    released = [e[1] for e in engine.events[first:second] if e[0] == "release"]
    # round 1: the root and every depth-1 child not kept in the beam of width 1 are freed at once
    open_or_pruned = [n for n in sol.tree.nodes if n.depth == 1 and n.status != "rejected"]
    assert len(released) == 1 + len(open_or_pruned) - 1
    assert not engine.live


def test_siblings_sharing_a_prefix_sample_independently():
    table = {"": [Step(f"s{i}\n") for i in range(8)], "*": [Step("#### 0\n")]}
    engine = ScriptedEngine(table)
    sol = search.solve(Q, strategy="beam", threshold=1.0, policy=engine, width=1, samples=8, seed=3)
    seeds = engine.calls[0]["seeds"][0]
    assert len(set(seeds)) == 8
    assert seeds == tuple(child_seed(3, (i,)) for i in range(8))
    texts = [sol.tree.nodes[c].text for c in sol.tree.children[0]]
    assert len(set(texts)) >= 4  # 8 draws from 8 equal options: far from one repeated sample


def test_a_node_draws_the_same_children_whatever_the_batch():
    alone = search.solve(Q, strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                         threshold=0.65, seed=2, width=2, samples=3)
    engine = ScriptedEngine(ARITH)
    batch = search.solve_many(["Another question?", Q, Q], strategy="beam", policy=engine, verifier=HiddenVerifier(),
                              threshold=0.65, seed=2, width=2, samples=3)
    for sol in batch:
        assert summary(sol.tree) == summary(alone.tree) and sol.answer == alone.answer
    # one engine.expand call per round carries the requests of all three problems
    assert len(engine.calls) == alone.stats["rounds"]
    assert set(engine.calls[0]["questions"]) == {"Another question?", Q}


def test_accounting_with_and_without_kv_sharing():
    shared = search.solve(Q, strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                          threshold=0.65, seed=6, width=2, samples=4)
    s = shared.stats
    assert s["tokens_run"] == s["tokens_in_tree"] == shared.tree.count_tokens()
    assert s["tokens_generated"] == s["tokens_in_tree"] - len(Q)
    assert s["tokens_saved"] > 0 and s["peak_kv_bytes"] > 0 and s["verifier_calls"] == s["rounds"]
    recomputed = search.solve(Q, strategy="beam", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier(),
                              threshold=0.65, seed=6, width=2, samples=4, share_kv=False)
    assert summary(recomputed.tree) == summary(shared.tree)
    r = recomputed.stats
    assert r["tokens_saved"] == 0 and r["tokens_run"] == s["tokens_run"] + s["tokens_saved"]


def test_greedy_redraws_a_step_the_verifier_rejects():
    table = {"": [Step("bad\n", 5, 0.9), Step("good\n", 1, 0.1)], "good\n": [Step("#### 7\n", 1, 0.0)]}
    engine = ScriptedEngine(table)
    sol = search.solve(Q, strategy="greedy", threshold=0.5, policy=engine, verifier=HiddenVerifier(), retries=20)
    assert sol.answer == "7"
    kids = [sol.tree.nodes[c] for c in sol.tree.children[0]]
    assert kids[0].text == "bad\n" and kids[0].status == "pruned"  # the greedy step, forced back
    assert all(k.status == "pruned" for k in kids[:-1]) and kids[-1].text == "good\n"
    assert engine.calls[0]["temperature"] == 0.0 and engine.calls[1]["temperature"] == 0.7
    # with the verifier off the same greedy run keeps the bad step (the policy's own P is 0 here)
    none = search.solve(Q, strategy="greedy", threshold=1.0, policy=ScriptedEngine(table | {"bad\n": ["#### 1\n"]}))
    assert none.answer == "1"
    # no retries: the root's draws are spent at once
    spent = search.solve(Q, strategy="greedy", threshold=0.5, policy=ScriptedEngine(table), verifier=HiddenVerifier(),
                         retries=0)
    assert spent.answer is None and spent.stats["reason"] == "all_pruned"


def test_best_of_n_majority_and_weighted_votes_differ():
    table = {"": [Step("#### 1\n", 3, 0.45), Step("#### 2\n", 1, 0.0)]}
    kw = dict(strategy="best_of_n", n=16, threshold=1.0, verifier=HiddenVerifier(), seed=1)
    majority = search.solve(Q, policy=ScriptedEngine(table), vote="majority", **kw)
    weighted = search.solve(Q, policy=ScriptedEngine(table), vote="weighted", **kw)
    votes = majority.stats["votes"]
    assert majority.answer == "1" and votes["1"] > votes["2"]
    n1, n2 = votes["1"], votes["2"]
    assert weighted.answer == ("2" if n2 > 0.55 * n1 else "1")
    assert weighted.stats["votes"] == pytest.approx({"1": 0.55 * n1, "2": n2}, rel=1e-5)


@pytest.mark.parametrize("knobs, reason", [
    ({"max_nodes": 3}, "max_nodes"),
    ({"max_tokens": 5}, "max_tokens"),
    ({"time_limit_s": 0.0}, "time_limit"),
])
def test_budget_exhaustion_returns_no_answer_with_the_reason(knobs, reason):
    engine = ScriptedEngine(ARITH)
    sol = search.solve(Q, strategy="beam", policy=engine, verifier=HiddenVerifier(), threshold=0.65, seed=6,
                       width=2, samples=4, **knobs)
    assert sol.answer is None and sol.text is None and sol.stats["reason"] == reason
    assert not engine.live


def test_one_problem_over_budget_does_not_stop_the_batch():
    long = {("Long?", ""): ["a\n"], ("Long?", "a\n"): ["a\n"], ("Long?", "a\na\n"): ["a\n"], "": ["#### 3\n"],
            "*": ["a\n"]}
    engine = ScriptedEngine(long)
    short, slow = search.solve_many([Q, "Long?"], strategy="greedy", policy=engine, max_nodes=3)
    assert short.answer == "3" and short.stats["reason"] == "answer"
    assert slow.answer is None and slow.stats["reason"] == "max_nodes"
    assert not engine.live


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "astar"}, "unknown strategy"),
    ({"threshold": -0.1}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": "0.5"}, "threshold"),
    ({"strategy": "beam", "width": 0}, "width"),
    ({"strategy": "beam", "samples": 0}, "samples"),
    ({"strategy": "best_of_n", "n": 0}, "n must"),
    ({"strategy": "mcts", "simulations": 0}, "simulations"),
    ({"strategy": "beam", "widht": 2}, "unknown knob 'widht'"),
    ({"strategy": "greedy", "config": search.BeamConfig()}, "needs a GreedyConfig"),
    ({"verifier": HiddenVerifier(hidden_size=8)}, "size 8"),
    ({"verifier": object()}, "score"),
])
def test_bad_input_fails_before_any_model_work(kwargs, match):
    engine = ScriptedEngine(ARITH)
    with pytest.raises(ValueError, match=match):
        search.solve(Q, policy=engine, **kwargs)
    assert engine.started == [] and engine.calls == []


class _ProbedVerifier:  # no hidden_size attribute: solve probes it with one zero state
    def score(self, hidden):
        return hidden @ __import__("torch").ones(8)


@pytest.mark.parametrize("problem, match", [("", "empty"), ("   \n", "empty"), ("x" * 5000, "5000 characters"),
                                            (42, "question string")])
def test_bad_questions_fail_before_any_model_work(problem, match):
    engine = ScriptedEngine(ARITH)
    with pytest.raises(ValueError, match=match):
        search.solve(problem, policy=engine)
    assert engine.started == []


def test_a_verifier_for_another_policy_is_caught_by_probing():
    engine = ScriptedEngine(ARITH)
    with pytest.raises(ValueError, match="another policy"):
        search.solve(Q, policy=engine, verifier=_ProbedVerifier())
    assert engine.started == []


def test_problem_records_and_ids():
    class Problem:
        question, id = Q, "gsm8k-17"

    sol = search.solve(Problem(), strategy="greedy", policy=ScriptedEngine(ARITH), verifier=HiddenVerifier())
    assert sol.problem_id == "gsm8k-17" and sol.answer == "4" and sol.tree.question == Q
    with pytest.raises(ValueError, match="list of problems"):
        search.solve_many(Q, policy=ScriptedEngine(ARITH))


def test_no_default_run_says_which_command_makes_one(monkeypatch, tmp_path):
    monkeypatch.setenv("REWIND_RUN", str(tmp_path / "no-such-run"))
    with pytest.raises(FileNotFoundError, match="rewind demo"):
        search.solve(Q)
