"""The training configuration: one frozen dataclass whose fields are the ``rewind train-policy`` flags.

Every field is a ``search.knobs.knob`` carrying its help text; ``experiments.flags`` builds the
argparse flags from the fields and the config back from them, so nothing is written twice.
Defaults that depend on the model or the data are ``None`` here and are filled in by
``resolve_counts`` (problem counts, from the dataset's size, before any model is loaded) and by
``policy.sft`` (the learning rate from the model, the longest sequence from the tokenized data);
the resolved values are what ``train_config.json`` records.

Plateau stopping (``plateau_patience`` > 0, ``policy.plateau``): training ends once the held-out eval
loss has gone ``plateau_patience`` evals in a row without improving by ``plateau_delta`` (relative);
``max_steps`` / ``num_epochs`` then only cap it. The learning-rate schedule still runs over that cap:
under ``cosine`` a run that stops early stops at a still-high rate, and where it stops depends on the
decay as much as on the data, so pair the rule with ``constant_with_warmup`` (what ``rewind ablation``
does) to make the stop a property of the training mode alone. The policy saved is the one at the stop;
``metrics.json`` records ``stopped_early``, ``plateau_step``, ``best_eval_loss`` and ``best_eval_step``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from search.knobs import knob as _f

__all__ = ["TRAIN_MODES", "TrainConfig", "default_lr", "resolve_counts"]

DEFAULT_BUILTIN_PROBLEMS = 8000
# Peak learning rates by what trains: the built-in ~0.8M-parameter policy from scratch, LoRA
# adapters on a pretrained model, or all weights of a pretrained model (3e-3 destroys those at once).
LR_TINY, LR_LORA, LR_FULL = 3e-3, 1e-4, 1e-5

TRAIN_MODES = ("clean", "naive", "masked", "hard", "dpo")


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
    num_problems: int | None = _f(None, "training problems (>= 1); default: builtin 8000, gsm8k every train "
                                 "problem not held out for --num-eval")
    num_eval: int = _f(128, "held-out problems for the eval loss (>= 1)")
    max_length: int | None = _f(None, "longest training sequence in tokens (default: the model's context); "
                                "longer ones are an error, said before the dataset is built")
    prompt_format: str | None = _f(None, "plain | chat | fewshot:K | chat-fewshot:K | a template file with "
                                   "{question} (default: the policy's own, plain for a new model)")
    # optimisation
    max_steps: int = _f(-1, "stop after this many optimiser steps (-1: run num_epochs)")
    num_epochs: float = _f(2.0, "passes over the training examples (> 0)")
    batch_size: int = _f(32, "examples per device per step (>= 1)")
    grad_accum: int = _f(1, "gradient accumulation steps (>= 1)")
    group_by_length: bool = _f(False, "batch examples of similar length (transformers' length-grouped sampler): a "
                               "sixth fewer tokens computed on the built-in task, but there it trained worse (eval loss "
                               "0.71 vs 0.53 after 120 steps: a batch of one length is one template)", flag=True)
    lr: float | None = _f(None, f"peak learning rate (> 0); default: {LR_TINY} for the built-in tiny policy, "
                          f"{LR_LORA} for LoRA, {LR_FULL} for full fine-tuning of a pretrained model")
    lr_scheduler: str = _f("cosine", "transformers scheduler name (cosine, linear, constant, constant_with_warmup, "
                           "...); with --plateau-patience a constant one (cosine decays over the max_steps cap)")
    warmup_ratio: float = _f(0.03, "share of steps spent warming the learning rate up, in [0, 1)")
    weight_decay: float = _f(0.0, "AdamW weight decay (>= 0)")
    seed: int = _f(0, "seed for data building, initialisation and shuffling")
    # plateau stopping (policy.plateau): stop once the eval loss no longer improves
    plateau_patience: int = _f(0, "stop after this many evals in a row (every --eval-steps) without a relative "
                               "improvement of --plateau-delta in the eval loss; 0: off (train max_steps / num_epochs)")
    plateau_delta: float = _f(0.01, "relative eval-loss improvement that resets the plateau count, in [0, 1)")
    plateau_keep_best: bool = _f(False, "with --plateau-patience: end training on the weights of the lowest eval loss "
                                 "(held in memory) instead of the last; off: the last (a loss spike before the "
                                 "stop is then saved)")
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "autocast of the forward: auto = bf16 on a GPU that supports it, else fp32")
    dtype: Literal["fp32", "bf16", "fp16"] = _f(
        "fp32", "dtype of the trained weights: fp32 master weights (whatever the checkpoint's dtype; mixed "
        "precision comes from --precision), or bf16/fp16 weights trained as they are")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass (less memory)", flag=True)
    # LoRA (Hu et al. 2021) through PEFT; the ⟨b⟩ embedding row trains too
    lora_r: int = _f(0, "LoRA rank (0: train all weights)")
    lora_alpha: float | None = _f(None, "LoRA alpha; the update is scaled by alpha / r (default: 2r)")
    lora_targets: str = _f("all-linear", "LoRA target modules: all-linear or names like q_proj,v_proj")
    lora_dropout: float = _f(0.0, "LoRA dropout in [0, 1)")
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
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_epochs", "lr", "beta", "harvest_temperature"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range (the Trainer seeds numpy), checked before any work
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use num_epochs) or >= 1, got {self.max_steps}")
        if isinstance(self.plateau_patience, bool) or not isinstance(self.plateau_patience, int) \
                or self.plateau_patience < 0:
            raise ValueError(f"plateau_patience must be an int >= 0 (0: off), got {self.plateau_patience!r}")
        if not 0 <= self.plateau_delta < 1:
            raise ValueError(f"plateau_delta must be a relative improvement in [0, 1), got {self.plateau_delta!r}")
        if not isinstance(self.plateau_keep_best, bool):
            raise ValueError(f"plateau_keep_best must be true or false, got {self.plateau_keep_best!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.nll_weight < 0:
            raise ValueError("weight_decay and nll_weight must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"dtype must be fp32, bf16 or fp16, got {self.dtype!r}")
        if self.lora_r < 0 or (self.lora_alpha is not None and not self.lora_alpha > 0):
            raise ValueError(f"lora_r must be >= 0 and lora_alpha > 0, got {self.lora_r}, {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_r and self.model == "tiny" and self.mode != "dpo" and not self.harvest_from:
            raise ValueError("--lora-r is for pretrained models; the built-in tiny policy trains from scratch")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be eager or sdpa, got {self.attn_implementation!r}")


def resolve_counts(config: TrainConfig, dataset_size: int | None) -> TrainConfig:
    """Fill in ``num_problems`` and refuse counts the dataset cannot hold, before any work.

    ``dataset_size`` is the number of problems the task has (None: the generator, unbounded).
    The eval problems are held out of the same pool, so training and eval never share a problem."""
    n, n_eval = config.num_problems, config.num_eval
    if dataset_size is None:
        return dataclasses.replace(config, num_problems=n or DEFAULT_BUILTIN_PROBLEMS)
    if n_eval >= dataset_size:
        raise ValueError(f"the {config.task} training set has {dataset_size} problems; --num-eval {n_eval} "
                         "leaves none for training")
    n = dataset_size - n_eval if n is None else n
    if n + n_eval > dataset_size:
        raise ValueError(f"the {config.task} training set has {dataset_size} problems; --num-problems {n} + "
                         f"--num-eval {n_eval} = {n + n_eval} is more (at most --num-problems "
                         f"{dataset_size - n_eval} with --num-eval {n_eval})")
    return dataclasses.replace(config, num_problems=n)


def default_lr(config: TrainConfig, *, tiny: bool) -> float:
    """``config.lr``, or the default for what trains (see ``LR_TINY``, ``LR_LORA``, ``LR_FULL``)."""
    if config.lr is not None:
        return config.lr
    if tiny:
        return LR_TINY
    return LR_LORA if config.lora_r else LR_FULL
