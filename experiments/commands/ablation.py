"""``rewind ablation``: training modes × inference methods at matched token budgets, with 95% CIs
and McNemar tests vs the clean baseline; also verifier vs the policy's P(⟨b⟩) as pruning signal.

It trains every policy (and its verifier) itself, into ``OUT/runs/<mode>-s<seed>/``, reusing
finished ones; then evaluates every cell into ``OUT/results.jsonl`` (resumable) and writes
``OUT/ablation.md`` and ``OUT/ablation.png``. Every flag is a field of
``experiments.studies.ablation.AblationConfig``.

  rewind ablation --out runs/ablation                 # the full table: 6 modes x 5 methods, 3 seeds, 500 problems
  rewind ablation --out /tmp/ablation-smoke --smoke   # the pipeline end to end in 2-3 minutes

The full default trains 18 policies and 18 verifiers and solves 48,000 (problem, cell) pairs, 27,000
of them with ~1,000-token sampling budgets: roughly 35-45 hours on 2 idle CPU cores (search runs at
~250 tokens/s there), far less on a GPU. A cheaper table: --seeds 0,1 --budget 4 (about 10-12 hours).
A rerun resumes where it stopped (finished policies, verifiers and problems are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.ablation import AblationConfig, run_ablation

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (AblationConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_flags(parser, AblationConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, AblationConfig)
    print(run_ablation(config))
    print(f"rewind ablation: wrote {Path(config.out) / 'ablation.md'} and {Path(config.out) / 'ablation.png'}")
    return 0
