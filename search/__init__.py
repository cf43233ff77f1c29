"""Rewind search: ``solve(problem)`` over a tree of steps that share KV prefixes and are pruned
at verifier thresholds; strategies greedy-with-rewind, best-of-N, step beam search and MCTS.

Importing ``search`` loads no model. See DESIGN §5.
"""

from search import interfaces
from search.config import CONFIGS, BeamConfig, BestOfNConfig, GreedyConfig, MCTSConfig, SearchConfig
from search.export import export_tree, load_tree, tree_to_networkx
from search.replay import ReplayResult, replay
from search.solve import Solution, solve, solve_many
from search.strategies import STRATEGIES
from search.tree import Node, Tree

__all__ = [
    "CONFIGS",
    "STRATEGIES",
    "BeamConfig",
    "BestOfNConfig",
    "GreedyConfig",
    "MCTSConfig",
    "Node",
    "ReplayResult",
    "SearchConfig",
    "Solution",
    "Tree",
    "export_tree",
    "interfaces",
    "load_tree",
    "replay",
    "solve",
    "solve_many",
    "tree_to_networkx",
]
