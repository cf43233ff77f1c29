"""``rewind diagnose RUN``: the headroom report of a run (see ``experiments.studies.diagnose``).

Every flag is a field of ``experiments.studies.diagnose.DiagnoseConfig``; ``RUN`` may be given positionally.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.diagnose import DiagnoseConfig, run_diagnose

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (DiagnoseConfig,)  # every flag but RUN is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_folder", metavar="RUN", nargs="?",
                        help="a run folder with a policy and a verifier (any source experiments.wiring resolves "
                             "that brings a verifier)")
    add_config_flags(parser, DiagnoseConfig)


def run(args: argparse.Namespace) -> int:
    given = args.run_folder or args.run
    if not given:
        raise ValueError("give the run folder: rewind diagnose RUN")
    folder = Path(given)
    if args.out is None and not folder.is_dir():
        raise ValueError(f"{given} is no run folder to write diagnose/ into: pass --out DIR")
    args.run = str(given)  # any source experiments.wiring resolves (a run folder brings its verifier)
    config = config_from_args(args, DiagnoseConfig)
    run_diagnose(config)
    print(f"rewind diagnose: wrote {Path(config.out) if config.out else folder / 'diagnose'}")
    return 0
