"""Step-level beam search: ``width`` beams, ``samples`` children per beam, keep the best.

The root draws ``width × samples`` children (``root_samples``), so the first step is as wide as
every later round; after that each round every beam draws ``samples`` children; pruned and rejected children drop out,
terminal ones are set aside, and the best ``width`` open children (by lowest P(backtrack),
ties by path log-prob, or by path log-prob alone) become the next beams. The others release
their KV at once. The answer is the best terminal node by the same ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from search.config import BeamConfig
from search.run import Expand, Outcome, SearchRun, path_p
from search.tree import ROOT
from search.vote import no_answer

__all__ = ["beam", "rank_key"]


def rank_key(run: SearchRun, rank: str, aggregate: str = "last") -> Callable[[int], tuple[float, float, int]]:
    """Sort key of nodes, best first; node id breaks ties so the search is deterministic."""
    keys = {
        "verifier": lambda n: (path_p(run, n, aggregate), -run.path_logprob(n), n),
        "logprob": lambda n: (-run.path_logprob(n), path_p(run, n, aggregate), n),
    }
    return keys[rank]


def beam(run: SearchRun, config: BeamConfig) -> Generator[list[Expand], None, Outcome]:
    key = rank_key(run, config.rank, config.aggregate)
    root_samples = config.root_samples or config.width * config.samples
    frontier = [ROOT]
    while frontier:
        yield [Expand(n, root_samples if n == ROOT else config.samples, config.temperature) for n in frontier]
        children = sorted((c for n in frontier for c in run.open_children(n)), key=key)
        frontier = children[: config.width]
        for c in children[config.width :]:
            run.tree.update(c, reason="not kept in the beam")
            run.release(c)
    finished = run.answers()
    if not finished:
        return no_answer(run)
    return Outcome(min(finished, key=key), "answer")
