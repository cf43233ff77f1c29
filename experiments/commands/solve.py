"""``rewind solve "question"``: search one problem and print the answer, the chosen path and the stats.

The strategy knobs are generated from ``search.config`` (one flag per config field, help text
from the field), so they are never written twice. ``--policy`` takes a run folder (``policy/``
and optionally ``verifier/`` inside) or a policy folder; with neither ``--policy`` nor
``--verifier`` the default run is used (``rewind demo``, or ``REWIND_RUN``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import search
from search.config import CONFIGS, make_config
from search.defaults import load_default

__all__ = ["add_arguments", "run"]

_OWN = {"strategy", "policy", "verifier", "export", "json", "question"}


def _config_fields() -> dict[str, dataclasses.Field]:
    """Every config field of every strategy, first definition wins (shared fields come first)."""
    out: dict[str, dataclasses.Field] = {}
    for cls in CONFIGS.values():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f)
    return out


def _flag_type(f: dataclasses.Field) -> dict[str, Any]:
    hints = typing.get_type_hints(_owner(f.name))
    hint = hints[f.name]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": list(typing.get_args(hint))}
    if hint in (int, float, str):
        return {"type": hint}
    if hint == int | None:
        return {"type": int}  # max_kv_bytes
    return {"type": float}  # float | None (time_limit_s)


def _owner(name: str) -> type:
    return next(cls for cls in CONFIGS.values() if name in {f.name for f in dataclasses.fields(cls)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the problem to solve, in quotes")
    parser.add_argument("--strategy", choices=sorted(CONFIGS), default="beam", help="search strategy (default beam)")
    parser.add_argument("--policy", metavar="RUN", type=Path,
                        help="a run folder (policy/ and verifier/ inside) or a policy folder; default: the default run")
    parser.add_argument("--verifier", metavar="PATH", type=Path,
                        help="a saved verifier head; default: the run's verifier, or none (the policy's P(<b>) prunes)")
    parser.add_argument("--export", metavar="FILE", type=Path,
                        help="write the search tree (.html viewer, .json, .dot, .graphml, .gexf)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    knobs = parser.add_argument_group("search knobs (defaults per strategy: see search.config)")
    for name, f in _config_fields().items():
        owner = _owner(name).__name__
        knobs.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **_flag_type(f),
                           help=f"{f.metadata.get('help', '')} [{owner}, default {f.default!r}]")


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(policy, verifier) from the flags; (None, None) lets search load the default run."""
    policy = verifier = None
    if args.policy is not None:
        path = args.policy.expanduser()
        if not path.exists():
            raise FileNotFoundError(f"--policy {path} does not exist")
        if (path / "policy").is_dir():
            from experiments.wiring import load_run

            policy, verifier = load_run(path, with_verifier=args.verifier is None)
        else:
            from policy import load_policy

            policy = load_policy(path)
    if args.verifier is not None:
        if policy is None:
            policy, _ = load_default()
        if not args.verifier.exists():
            raise FileNotFoundError(f"--verifier {args.verifier} does not exist")
        from verifier.head import load_verifier

        verifier = load_verifier(args.verifier, policy)
    return policy, verifier


def run(args: argparse.Namespace) -> int:
    knobs = {k: v for k, v in vars(args).items()
             if k in _config_fields() and v is not None and k not in _OWN}
    make_config(args.strategy, None, **knobs)  # bad knobs fail before loading a model
    policy, verifier = _load(args)
    sol = search.solve(args.question, strategy=args.strategy, policy=policy, verifier=verifier, **knobs)
    if args.export is not None:
        from search.export import export_tree

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
