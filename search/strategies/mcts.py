"""MCTS with PUCT over steps (Silver et al. 2017, "Mastering the game of Go without human knowledge").

One simulation: ``select`` descends from the root by PUCT to an unexpanded node; ``expand``
draws ``children`` steps from it (one engine round); ``backup`` adds the node's value
``1 - P(backtrack)`` to every node on its path. A terminal node selected again is not expanded:
its value is backed up once more. The prior of a child is the softmax of the step log-probs
over its non-rejected siblings; an unvisited child's Q is its own verifier value (first-play
urgency from the verifier, where AlphaZero uses 0). A node with no usable child is "dead":
never selected again, backed up with value 0. The answer is a vote over terminal nodes by
visit count or by summed value.
"""

from __future__ import annotations

import math
from collections.abc import Generator

from search.config import MCTSConfig
from search.run import Expand, Outcome, SearchRun
from search.tree import ROOT
from search.vote import vote

__all__ = ["mcts", "puct_score"]


def puct_score(q: float, prior: float, parent_visits: int, visits: int, c_puct: float) -> float:
    """PUCT: ``Q(s,a) + c_puct · P(s,a) · sqrt(N(s)) / (1 + N(s,a))`` (AlphaGo Zero, Methods)."""
    return q + c_puct * prior * math.sqrt(max(parent_visits, 1)) / (1 + visits)


def mcts(run: SearchRun, config: MCTSConfig) -> Generator[list[Expand], None, Outcome]:
    dead: set[int] = set()
    for _ in range(config.simulations):
        leaf = _select(run, config, dead)
        if leaf is None:  # every branch is dead
            break
        node = run.tree.nodes[leaf]
        if node.status == "open":
            yield [Expand(leaf, config.children, config.temperature)]
            if not _usable(run, leaf, dead):
                dead.add(leaf)
        run.tree.backup(leaf, 0.0 if leaf in dead else _value(run, leaf))
    weights = {
        "visits": lambda n: float(run.tree.nodes[n].visits),
        "weighted": lambda n: run.tree.nodes[n].value_sum,
    }
    return vote(run, run.answers(), weights[config.answer])


def _value(run: SearchRun, nid: int) -> float:
    """``1 - P(backtrack)``; 0 for a terminal node that ended without an answer."""
    node = run.tree.nodes[nid]
    if node.status == "terminal" and node.answer is None:
        return 0.0
    return 1.0 - run.p(nid)


def _usable(run: SearchRun, nid: int, dead: set[int]) -> list[int]:
    return [c for c in run.live_children(nid) if c not in dead
            and not (run.tree.nodes[c].status == "terminal" and run.tree.nodes[c].answer is None)]


def _select(run: SearchRun, config: MCTSConfig, dead: set[int]) -> int | None:
    """Descend by PUCT to an unexpanded or terminal node; mark dead ends on the way."""
    tree = run.tree
    while ROOT not in dead:
        nid = ROOT
        while tree.nodes[nid].status == "expanded":
            kids = _usable(run, nid, dead)
            if not kids:
                dead.add(nid)
                tree.backup(nid, 0.0)
                break
            siblings = [c for c in tree.children[nid] if tree.nodes[c].status != "rejected"]
            top = max(tree.nodes[c].logprob for c in siblings)
            z = sum(math.exp(tree.nodes[c].logprob - top) for c in siblings)
            n_parent = tree.nodes[nid].visits

            def score(c: int, top: float = top, z: float = z, n_parent: int = n_parent) -> tuple[float, int]:
                child = tree.nodes[c]
                q = child.value if child.visits else _value(run, c)
                prior = math.exp(child.logprob - top) / z
                return puct_score(q, prior, n_parent, child.visits, config.c_puct), -c

            nid = max(kids, key=score)
        else:
            return nid
    return None
