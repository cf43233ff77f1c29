"""``rewind demo``: the whole pipeline on the built-in task (see ``experiments.studies.demo``).

Every flag is a field of ``experiments.studies.demo.DemoConfig``."""

from __future__ import annotations

import argparse

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.demo import DemoConfig, run_demo

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (DemoConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    run_demo(config_from_args(args, DemoConfig))
    return 0
