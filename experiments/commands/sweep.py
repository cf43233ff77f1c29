"""``rewind sweep``: a threshold sweep (live runs and the replay of one recorded search) with plots.

Every flag is a field of ``experiments.studies.threshold_sweep.SweepConfig``. Sharded under
``torchrun --nproc_per_node W -m experiments.commands.cli -- sweep ...`` (the ``--`` keeps torchrun's own
parser off flags such as ``--run``); a rerun with the same flags resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.threshold_sweep import SweepConfig, run_sweep

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (SweepConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, SweepConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, SweepConfig)
    rows = run_sweep(config)
    if rows is not None:
        print((Path(config.out) / "summary.md").read_text())
        print(f"rewind sweep: wrote {Path(config.out)} ({len(rows)} rows)")
    return 0
