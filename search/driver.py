"""The round loop shared by live search and replay.

Each strategy is a generator per problem. A round gathers the ``Expand`` requests of every
unfinished problem, checks each problem's budget, draws all children through one ``Source``
call (live: one batched ``engine.expand`` per temperature and one verifier call; replay: the
recorded tree), adds them to the trees, notes the live KV, releases what was expanded, and
resumes the generators. A problem that runs out of budget finishes with ``Outcome(None, reason)``;
the others go on. When the source raises ``MemoryError`` (the engine's ``max_kv_bytes``), the
problem holding the most KV finishes with reason ``"max_kv_bytes"`` and the round is retried.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Protocol

from search.run import Drawn, Expand, Outcome, SearchRun
from search.strategies import STRATEGIES

__all__ = ["Source", "drive"]


class Source(Protocol):
    def draw(self, batch: Sequence[tuple[SearchRun, Expand]]) -> list[list[Drawn]]:
        """The drawn children of every request, in order; also adds its costs to each run's accounting."""
        ...


def drive(runs: Sequence[SearchRun], source: Source, *, start: float,
          use_clock: bool = True) -> list[tuple[Outcome, float]]:
    """Run every problem's strategy to its end; returns (outcome, wall seconds since ``start``) per run."""
    gens: list[Generator[list[Expand], None, Outcome]] = [
        STRATEGIES[run.config.strategy](run, run.config) for run in runs
    ]
    done: list[tuple[Outcome, float] | None] = [None] * len(runs)
    pending: dict[int, list[Expand]] = {}

    def finish(i: int, outcome: Outcome) -> None:
        runs[i].close()
        done[i] = (outcome, time.perf_counter() - start)

    def advance(i: int, first: bool = False) -> None:
        try:
            requests = next(gens[i]) if first else gens[i].send(None)
        except StopIteration as stop:
            finish(i, stop.value)
            return
        if not requests:
            raise RuntimeError(f"strategy {runs[i].config.strategy!r} yielded an empty round")
        pending[i] = list(requests)

    for i in range(len(runs)):
        advance(i, first=True)
    while pending:
        elapsed = time.perf_counter() - start if use_clock else 0.0
        for i in list(pending):
            reason = runs[i].over_budget(pending[i], elapsed)
            if reason is not None:
                gens[i].close()
                del pending[i]
                finish(i, Outcome(None, reason))
        batch = [(runs[i], req) for i, reqs in pending.items() for req in reqs]
        if not batch:
            break
        try:
            drawn = source.draw(batch)
        except MemoryError:  # the engine's KV limit: give up the problem holding the most KV, retry the rest
            victim = max(pending, key=lambda i: runs[i].live_kv())
            gens[victim].close()
            del pending[victim]
            finish(victim, Outcome(None, "max_kv_bytes"))
            continue
        for (run, req), children in zip(batch, drawn, strict=True):
            run.add_children(req.node, children)
        for i, reqs in pending.items():
            runs[i].acct.rounds += 1
            runs[i].note_kv()  # peak: the new children and the nodes they came from are all live
            for req in reqs:
                runs[i].mark_expanded(req.node, keep=req.keep)
        for i in list(pending):
            del pending[i]
            advance(i)
            runs[i].drop_spares()  # the strategy has seen the round: what it did not revive goes
    return [d for d in done if d is not None]
