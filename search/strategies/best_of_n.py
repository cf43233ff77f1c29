"""Best-of-N: ``n`` independent chains of steps from the root, then a vote on their answers.

A chain ends at its terminal step, or where its step is pruned or rejected (no redraw). The
vote is a plain majority or weighted by the chain's P(no error) = prod over its steps of (1 - P(backtrack)).
"""

from __future__ import annotations

from collections.abc import Generator

from search.config import BestOfNConfig
from search.run import Expand, Outcome, SearchRun, path_p
from search.tree import ROOT
from search.vote import vote

__all__ = ["best_of_n"]


def best_of_n(run: SearchRun, config: BestOfNConfig) -> Generator[list[Expand], None, Outcome]:
    yield [Expand(ROOT, config.n, config.temperature)]
    while True:
        leaves = [n.id for n in run.tree.nodes if n.status == "open"]
        if not leaves:
            break
        yield [Expand(leaf, 1, config.temperature) for leaf in leaves]
    weights = {"majority": lambda n: 1.0, "weighted": lambda n: 1.0 - path_p(run, n, "prod")}
    return vote(run, run.answers(), weights[config.vote])
