"""The ``rewind`` command line. Each subcommand is a module with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``rewind --help``
stays fast and loads no model.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("experiments.commands.demo", "the whole pipeline on the built-in task: train, verify, search, sweep, report"),
    "data": ("experiments.commands.data", "build a dataset (problems, injected errors, DPO pairs) and print its statistics"),
    "train-policy": ("experiments.commands.train_policy", "train a policy: SFT (clean/naive/masked/hard), step-level DPO, on-policy round"),
    "generate": ("experiments.commands.generate", "decode one question with rewinds; print the raw trace (⟨b⟩ visible) and the text"),
    "solve": ("experiments.commands.solve", "search one problem (greedy, best_of_n, beam, mcts) and print answer, path, stats"),
    "train-verifier": ("experiments.commands.train_verifier", "train the verifier head on a frozen policy (labels: injected, rollouts, mc, mix) and report its diagnostics"),
    "bench": ("experiments.commands.bench", "benchmarks: speed ratios against model.generate, re-encoding and clean SFT; writes a table + JSON"),
    "export": ("experiments.commands.export", "convert a recorded search tree to .html (viewer), .dot, .graphml, .gexf or .json"),
    "eval": ("experiments.commands.eval", "evaluate one method on N held-out problems (builtin or GSM8K); shards under torchrun"),
    "diagnose": ("experiments.commands.diagnose", "what limits search on a run: greedy, pass@k, votes, beams ranked by verifier / log-prob / random / checker oracle, sibling AUROC"),
    "sweep": ("experiments.commands.sweep", "threshold sweep: live runs and the offline replay of one recorded search, with plots"),
    "ablation": ("experiments.commands.ablation", "training modes x inference methods at matched token budgets, CIs and paired tests"),
}


class UserError(Exception):
    """An error in what the user asked for: printed as one line, no traceback."""


# What code raises on purpose for bad input (DESIGN: bad input gets a clear ValueError / a missing
# file a FileNotFoundError). Anything else — a KeyError, an AttributeError — is a bug: it keeps its
# traceback.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewind", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_in(argv)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        if name == wanted:  # import only the module of the command being run
            importlib.import_module(module).add_arguments(p)
    return parser


def _command_in(argv: list[str] | None) -> str | None:
    for a in argv or []:
        if a in COMMANDS:
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("rewind: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"rewind {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
