"""``rewind train-verifier``: label prefixes, cache the frozen policy's hidden states, train the head.

Every flag is a field of ``verifier.config.VerifierTrainConfig``. Writes ``OUT/verifier/`` (load it
with ``verifier.load_verifier(OUT, policy)``), ``OUT/metrics.json`` and reliability plots.
"""

from __future__ import annotations

import argparse

from experiments.flags import add_config_flags, config_from_args
from verifier.config import VerifierTrainConfig
from verifier.train import train_verifier

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (VerifierTrainConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, VerifierTrainConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, VerifierTrainConfig)
    out = train_verifier(config)
    print(f"rewind train-verifier: wrote {out / 'verifier'} and {out / 'metrics.json'}")
    return 0
