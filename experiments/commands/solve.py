"""``rewind solve "question"``: search one problem and print the answer, the chosen path and the stats.

The strategy knobs are the fields of ``search.config`` (one flag per field, the shared ones once,
help text from the field), so they are never written twice. ``--policy`` takes every source
``experiments.wiring`` resolves (a run folder brings its verifier); with neither ``--policy`` nor
``--verifier`` the default run is used (``rewind demo``, or ``REWIND_RUN``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import search
from experiments.flags import add_config_flags, config_fields
from experiments.wiring import load
from search.config import CONFIGS as STRATEGY_CONFIGS
from search.config import SearchConfig, make_config
from search.export import export_tree

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (SearchConfig, *STRATEGY_CONFIGS.values())  # every knob flag is a field of these
_SHARED = tuple(f.name for f in config_fields(SearchConfig))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the problem to solve, in quotes")
    parser.add_argument("--strategy", choices=sorted(STRATEGY_CONFIGS), default="beam",
                        help="search strategy (default beam)")
    parser.add_argument("--policy", metavar="SOURCE",
                        help="a run folder (its verifier comes along), a policy or adapter folder, a .gguf file "
                             "or a hub name; default: the default run")
    parser.add_argument("--verifier", metavar="PATH",
                        help="a verifier folder or train-verifier run; default: the run's verifier, or none "
                             "(the policy's P(⟨b⟩) prunes)")
    parser.add_argument("--export", metavar="FILE",
                        help="write the search tree (.html viewer, .json, .dot, .graphml, .gexf)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    group = parser.add_argument_group("search knobs (defaults per strategy: see search.config)")
    add_config_flags(group, SearchConfig, unset=True, owner="all strategies")
    for cls in STRATEGY_CONFIGS.values():
        add_config_flags(group, cls, skip=_SHARED, unset=True, owner=cls.__name__)


def _knobs(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for cls in CONFIGS for f in config_fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def run(args: argparse.Namespace) -> int:
    knobs = _knobs(args)
    make_config(args.strategy, None, **knobs)  # bad knobs fail before loading a model
    policy, verifier = load(args.policy, verifier=args.verifier)
    sol = search.solve(args.question, strategy=args.strategy, policy=policy, verifier=verifier, **knobs)
    if args.export is not None:
        export_tree(sol.tree, args.export)
    if args.json:
        print(json.dumps({"answer": sol.answer, "text": sol.text, "chosen": sol.tree.chosen, "stats": sol.stats}))
        return 0 if sol.answer is not None else 1
    print(f"answer: {sol.answer if sol.answer is not None else '(none: ' + sol.stats['reason'] + ')'}")
    if sol.tree.chosen:
        print("chosen path:")
        for nid in sol.tree.chosen[1:]:
            n = sol.tree.nodes[nid]
            p = "-" if n.p_backtrack is None else f"{n.p_backtrack:.3f}"
            print(f"  [{nid:>4}] P(backtrack)={p}  logprob={n.logprob:8.3f}  {n.text.rstrip()}")
    width = max(len(k) for k in sol.stats)
    print("stats:")
    for k, v in sol.stats.items():
        print(f"  {k:<{width}}  {v}")
    if args.export is not None:
        print(f"tree written to {args.export}")
    return 0 if sol.answer is not None else 1
