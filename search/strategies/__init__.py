"""Search strategies, one generator function each, registered in ``STRATEGIES``.

A strategy ``f(run, config)`` is a generator: it yields the ``Expand`` requests of one round,
is resumed once their children are in ``run.tree``, and returns an ``Outcome``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from search.run import Expand, Outcome, SearchRun
from search.strategies.beam import beam
from search.strategies.best_of_n import best_of_n
from search.strategies.greedy import greedy
from search.strategies.mcts import mcts, puct_score

__all__ = ["STRATEGIES", "Strategy", "beam", "best_of_n", "greedy", "mcts", "puct_score"]

Strategy = Callable[[SearchRun, Any], Generator[list[Expand], None, Outcome]]

STRATEGIES: dict[str, Strategy] = {
    "greedy": greedy,
    "best_of_n": best_of_n,
    "beam": beam,
    "mcts": mcts,
}
