"""``rewind eval``: one inference method on N held-out problems → ``results.jsonl`` + ``summary.md``.

Every flag is a field of ``experiments.studies.evaluation.EvalConfig`` (sharding and resuming are
described there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.evaluation import EvalConfig, run_eval

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (EvalConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, EvalConfig)
    rows = run_eval(config)
    if rows is not None:
        print((Path(config.out) / "summary.md").read_text())
        print(f"rewind eval: wrote {Path(config.out) / 'results.jsonl'} ({len(rows)} rows)")
    return 0
