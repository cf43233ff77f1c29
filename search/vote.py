"""Answer votes over terminal nodes: plain majority, or weighted by a per-node mass."""

from __future__ import annotations

from collections.abc import Callable

from search.run import Outcome, SearchRun

__all__ = ["no_answer", "vote"]


def vote(run: SearchRun, nodes: list[int], weight: Callable[[int], float]) -> Outcome:
    """Sum ``weight(node)`` per answer over ``nodes``; the answer with the most mass wins.

    Ties go to the answer seen first (lowest node id). The chosen node is the winning answer's
    node of largest weight (then lowest id).
    """
    if not nodes:
        return no_answer(run)
    votes: dict[str, float] = {}
    for nid in nodes:
        ans = run.tree.nodes[nid].answer
        votes[ans] = votes.get(ans, 0.0) + float(weight(nid))
    best = max(votes, key=lambda a: votes[a])  # dicts keep insertion order: first seen wins ties
    chosen = max((n for n in nodes if run.tree.nodes[n].answer == best), key=lambda n: (weight(n), -n))
    return Outcome(chosen, "answer", votes)


def no_answer(run: SearchRun) -> Outcome:
    """The outcome of a search that found no answer: say whether pruning or rejection killed it."""
    statuses = {n.status for n in run.tree.nodes[1:]}
    if not statuses:
        return Outcome(None, "no_children")
    if statuses <= {"pruned", "rejected", "expanded"} and "pruned" in statuses:
        return Outcome(None, "all_pruned")
    if statuses <= {"rejected", "expanded"}:
        return Outcome(None, "all_rejected")
    return Outcome(None, "no_answer")
