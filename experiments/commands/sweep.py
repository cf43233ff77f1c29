"""``rewind sweep``: a threshold sweep (live runs and the replay of one recorded search) with plots.

Every flag is a field of ``experiments.studies.threshold_sweep.SweepConfig``. Sharded under
``torchrun --nproc_per_node W -m experiments.commands.cli -- sweep ...`` (the ``--`` keeps torchrun's own
parser off flags such as ``--run``); a rerun with the same flags resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from experiments.studies.threshold_sweep import SweepConfig
    from policy.train_config import add_config_arguments

    add_config_arguments(parser, SweepConfig)


def run(args: argparse.Namespace) -> int:
    from experiments.studies.threshold_sweep import SweepConfig, run_sweep
    from policy.train_config import config_from_args

    config = config_from_args(args, SweepConfig)
    rows = run_sweep(config)
    if rows is not None:
        print((Path(config.out) / "summary.md").read_text())
        print(f"rewind sweep: wrote {Path(config.out)} ({len(rows)} rows)")
    return 0
