"""Greedy decoding with rewind: temperature-0 steps; the verifier may force a backtrack.

At each node the first child is the greedy step. A child that is pruned (P(backtrack) >=
threshold) or rejected (its ⟨b⟩-run crossed its start) is dropped and redrawn by sampling
with a fresh per-node seed, up to ``retries`` times; a node whose draws are all spent backs
up to its parent, which redraws in turn.
"""

from __future__ import annotations

from collections.abc import Generator

from search.config import GreedyConfig
from search.run import Expand, Outcome, SearchRun
from search.tree import ROOT
from search.vote import no_answer

__all__ = ["greedy"]


def greedy(run: SearchRun, config: GreedyConfig) -> Generator[list[Expand], None, Outcome]:
    tree, node = run.tree, ROOT
    while True:
        drawn = len(tree.children[node])
        yield [Expand(node, 1, config.retry_temperature if drawn else 0.0, keep=True)]
        if len(tree.children[node]) == drawn:  # only in replay: the recorded tree lacks this draw
            return Outcome(None, "not_recorded")
        child = tree.children[node][-1]
        status = tree.nodes[child].status
        if status == "open":
            node = child
            continue
        if status == "terminal":
            return Outcome(child, "answer") if tree.nodes[child].answer is not None else no_answer(run)
        # pruned or rejected: redraw here, or back up past every node whose draws are spent
        while len(tree.children[node]) > config.retries:
            tree.update(node, reason=f"exhausted: {len(tree.children[node])} draws pruned or rejected")
            run.release(node)
            if node == ROOT:
                return no_answer(run)
            node = tree.nodes[node].parent
