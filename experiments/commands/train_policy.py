"""``rewind train-policy``: SFT in the four modes, step-level DPO, or an on-policy round.

Every flag is a field of ``policy.train_config.TrainConfig`` (and ``--merge``, an action of its
own). Runs data-parallel unchanged under
``torchrun --nproc_per_node N -m experiments.commands.cli train-policy ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse

from experiments.flags import add_config_flags, config_from_args
from policy.dpo import train_dpo
from policy.model import merge_lora
from policy.sft import train_sft
from policy.train_config import TrainConfig

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (TrainConfig,)  # every flag but --merge is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TrainConfig)
    parser.add_argument("--merge", metavar="ADAPTER", default=None,
                        help="instead of training: merge the LoRA adapter folder (or run) ADAPTER into its base "
                             "and write the full policy folder to --out")


def run(args: argparse.Namespace) -> int:
    if args.merge:
        print(f"rewind train-policy: wrote {merge_lora(args.merge, args.out)}")
        return 0
    config = config_from_args(args, TrainConfig)
    out = (train_dpo if config.mode == "dpo" else train_sft)(config)
    print(f"rewind train-policy: wrote {out / 'policy'}")
    return 0
