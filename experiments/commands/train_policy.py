"""``rewind train-policy``: SFT in the four modes, step-level DPO, or an on-policy round.

Every flag is a field of ``policy.train_config.TrainConfig``. Runs data-parallel unchanged under
``torchrun --nproc_per_node N -m experiments.commands.cli train-policy ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from policy.train_config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--merge", metavar="ADAPTER", default=None,
                        help="instead of training: merge the LoRA adapter folder (or run) ADAPTER into its base "
                             "and write the full policy folder to --out")


def run(args: argparse.Namespace) -> int:
    from policy.train_config import config_from_args

    if args.merge:
        from policy.model import merge_lora

        print(f"rewind train-policy: wrote {merge_lora(args.merge, args.out)}")
        return 0
    config = config_from_args(args)
    if config.mode == "dpo":
        from policy.dpo import train_dpo

        out = train_dpo(config)
    else:
        from policy.sft import train_sft

        out = train_sft(config)
    print(f"rewind train-policy: wrote {out / 'policy'}")
    return 0
