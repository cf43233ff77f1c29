"""``rewind demo``: the whole pipeline on the built-in task (see ``experiments.studies.demo``)."""

from __future__ import annotations

import argparse
import dataclasses

from experiments.studies.demo import DemoConfig, run_demo

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(DemoConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, type=float, nargs="+", default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default,
                                help=f"{f.metadata['help']} (default: {f.default})")


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(DemoConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["thresholds"] = tuple(kw["thresholds"])
    run_demo(DemoConfig(**kw))
    return 0
