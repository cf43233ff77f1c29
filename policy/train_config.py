"""The training configuration: one frozen dataclass whose fields are the ``rewind train-policy`` flags.

Every field carries its help text in ``metadata``; ``add_config_arguments`` builds the argparse
flags from the fields and ``config_from_args`` builds the config back, so nothing is written twice.
Defaults are sized for the built-in tiny policy (~0.8M parameters) to learn the built-in task in a
few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TRAIN_MODES", "TrainConfig", "add_config_arguments", "config_from_args"]

TRAIN_MODES = ("clean", "naive", "masked", "hard", "dpo")


def _f(default, help: str, **kw):  # noqa: A002 - "help" is argparse's own word
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train a policy (SFT in four modes, step-level DPO, or an on-policy round)."""

    out: str = _f(None, "run folder: gets policy/, train_config.json, metrics.json and checkpoints/")
    mode: Literal["clean", "naive", "masked", "hard", "dpo"] = _f("hard", "training mode (DESIGN §3), or dpo")
    model: str = _f("tiny", "'tiny' (the built-in char-level Llama) or a model name / save_pretrained folder")
    task: Literal["builtin", "gsm8k"] = _f("builtin", "training problems: the built-in generator or GSM8K")
    init: str | None = _f(None, "dpo: the SFT run folder (or policy folder) to start from; also the reference")
    harvest_from: str | None = _f(None, "on-policy round: sample this run's policy and add its own wrong steps")
    # data
    num_problems: int = _f(8000, "training problems (>= 1); each gives one or more examples")
    num_eval: int = _f(128, "held-out problems for the eval loss (>= 1)")
    max_length: int = _f(512, "longest training sequence in tokens; longer ones are an error, not truncated")
    # optimisation
    max_steps: int = _f(-1, "stop after this many optimiser steps (-1: run num_epochs)")
    num_epochs: float = _f(2.0, "passes over the training examples (> 0)")
    batch_size: int = _f(32, "examples per device per step (>= 1)")
    grad_accum: int = _f(1, "gradient accumulation steps (>= 1)")
    lr: float = _f(3e-3, "peak learning rate (> 0); the tiny policy likes 1e-3..3e-3, real models ~1e-5")
    lr_scheduler: str = _f("cosine", "transformers scheduler name (cosine, linear, constant, ...)")
    warmup_ratio: float = _f(0.03, "share of steps spent warming the learning rate up, in [0, 1)")
    weight_decay: float = _f(0.0, "AdamW weight decay (>= 0)")
    seed: int = _f(0, "seed for data building, initialisation and shuffling")
    # DPO (Rafailov et al. 2023)
    beta: float = _f(0.1, "dpo: inverse temperature β of the implicit reward (> 0)")
    nll_weight: float = _f(1.0, "dpo: weight α of the NLL term on the chosen completion (>= 0)")
    # on-policy round
    harvest_problems: int = _f(256, "on-policy: training problems to sample the policy on (>= 1)")
    harvest_temperature: float = _f(0.8, "on-policy: sampling temperature (> 0)")
    # bookkeeping
    logging_steps: int = _f(10, "log the training loss every N steps (>= 1)")
    eval_steps: int = _f(100, "eval loss every N steps (>= 1)")
    save_steps: int = _f(100, "checkpoint every N steps (>= 1)")
    save_total_limit: int = _f(2, "keep at most this many checkpoints (>= 1)")
    resume: bool = _f(False, "resume from the last complete checkpoint in OUT/checkpoints", flag=True)
    precision: Literal["auto", "fp32", "bf16"] = _f("auto", "auto: bf16 on a GPU that supports it, else fp32")
    attn_implementation: Literal["eager", "sdpa"] = _f("sdpa", "attention implementation the model trains with")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("TrainConfig.out (the run folder, --out) is required")
        if self.mode not in TRAIN_MODES:
            raise ValueError(f"mode must be one of {TRAIN_MODES}, got {self.mode!r}")
        if self.task not in ("builtin", "gsm8k"):
            raise ValueError(f"task must be 'builtin' or 'gsm8k', got {self.task!r}")
        if self.mode == "dpo" and not self.init:
            raise ValueError("mode 'dpo' needs --init RUN: the SFT run to start from (and to use as the reference)")
        if self.mode != "dpo" and self.init:
            raise ValueError(f"--init is for mode 'dpo'; mode {self.mode!r} starts from --model")
        if self.harvest_from and self.mode != "hard":
            raise ValueError(f"--harvest-from trains in mode 'hard' (got mode {self.mode!r})")
        positive = ("num_problems", "num_eval", "max_length", "batch_size", "grad_accum", "logging_steps",
                    "eval_steps", "save_steps", "save_total_limit", "harvest_problems")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_epochs", "lr", "beta", "harvest_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range (the Trainer seeds numpy), checked before any work
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_epochs) or >= 1, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.nll_weight < 0:
            raise ValueError("weight_decay and nll_weight must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be eager or sdpa, got {self.attn_implementation!r}")


def _base_type(hint) -> tuple[type, tuple | None]:
    """(python type, choices) of a field's annotation: ``str | None`` → str, ``Literal[...]`` → choices."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return _base_type(args[0])
    return hint, None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add one ``--flag`` per field of ``cls`` (underscores become dashes), with its help and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if f.metadata.get("flag"):
            parser.add_argument(flag, action="store_true", help=help_)
            continue
        typ, choices = _base_type(hints[f.name])
        required = f.name == "out"
        parser.add_argument(flag, type=typ, choices=choices, default=None if required else f.default,
                            required=required, help=f"{help_} (default: {f.default})" if not required else help_)


def config_from_args(args: argparse.Namespace, cls: type = TrainConfig):
    """Build ``cls`` from parsed flags (fields absent from ``args`` keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})
