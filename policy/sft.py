"""Supervised fine-tuning in the four modes of DESIGN §3, on the transformers ``Trainer``.

``train_sft(config)`` is the whole run: start policy → problems → segmented examples → checks →
``Trainer`` (progress bar, logging, eval loss, checkpoints, resume; DDP under ``torchrun``) →
``OUT/policy/`` (a ``Policy.save`` folder), ``OUT/train_config.json``, ``OUT/metrics.json``.
``fit`` is the reusable part (DPO and the on-policy round run through it too).

Checkpoints live in ``OUT/checkpoints/checkpoint-N``. The Trainer writes them file by file, so a
kill can leave a half-written folder; a checkpoint counts only once its ``rewind_complete`` marker
exists, which is written after every rank has finished writing it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from policy import data
from policy.atomic import atomic_write_json, atomic_write_text
from policy.collator import Collator, required_columns
from policy.generate import generate
from policy.locate import locate
from policy.lora import apply_lora
from policy.model import Policy, load_policy, tiny_policy
from policy.plateau import PlateauStop, best_eval
from policy.prompt_spec import prompt_format_from_spec
from policy.train_config import TrainConfig, default_lr, resolve_counts

__all__ = ["COMPLETE_MARKER", "CheckpointTrainer", "check_dataset", "check_lengths", "dataset_size", "fit",
           "harvest_datasets", "is_tiny", "last_complete_checkpoint", "resolve_config", "resolve_policy_dir",
           "start_policy", "train_sft"]

COMPLETE_MARKER = "rewind_complete"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The highest-step ``checkpoint-N`` in ``folder`` that has the completion marker, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in folder.iterdir()
            if (m := _CKPT.match(p.name)) and (p / COMPLETE_MARKER).exists()]
    return max(done)[1] if done else None


class CheckpointTrainer(Trainer):
    """A ``Trainer`` whose checkpoints become valid only when complete (see the module docstring)."""

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and folder.exists():
            shutil.rmtree(folder)  # a stale half-written folder from a killed run
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        super()._save_checkpoint(model, trial)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's RNG state is on disk
        if self.args.should_save:
            atomic_write_text(folder / COMPLETE_MARKER, f"{self.state.global_step}\n")


def resolve_policy_dir(run: str | Path) -> Path:
    """The policy folder (or LoRA adapter folder) of a run folder, a training run or a policy folder;
    refuse anything else clearly (``policy.locate``)."""
    run = Path(run).expanduser()
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist (expected a training run folder or a policy folder)")
    loc = locate(run)
    if loc.kind not in ("folder", "adapter"):
        raise ValueError(f"{run} is not a policy checkpoint folder")
    return Path(loc.source)


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY_MAX_PARAMS = 5_000_000  # below this a model counts as the built-in tiny policy (for default lr)


def is_tiny(policy: Policy) -> bool:
    return sum(p.numel() for p in policy.model.parameters()) < TINY_MAX_PARAMS


def start_policy(config: TrainConfig) -> Policy:
    """The policy training starts from: the tiny policy, a model name / folder / run / .gguf /
    adapter, or an earlier run; in ``config.dtype`` (fp32 master weights by default, whatever
    dtype the checkpoint was saved in), with ``config.prompt_format`` and, with ``lora_r``, LoRA."""
    attn, dtype = config.attn_implementation, _DTYPES[config.dtype]
    if config.harvest_from:  # an on-policy round continues the run it sampled
        policy = load_policy(config.harvest_from, attn_implementation=attn, dtype=dtype)
    elif config.model == "tiny":
        policy = tiny_policy(seed=config.seed, attn_implementation=attn)
        policy.model.to(dtype)
    else:
        policy = load_policy(config.model, attn_implementation=attn, dtype=dtype)
    if config.prompt_format is not None:
        fmt = prompt_format_from_spec(config.prompt_format, task=config.task)
        fmt.encode("?", policy.tokenizer)  # a chat format on a model without a template fails here
        policy = dataclasses.replace(policy, prompt_format=fmt)
    if config.lora_r:
        policy = apply_lora(policy, r=config.lora_r, alpha=config.lora_alpha, targets=config.lora_targets,
                            dropout=config.lora_dropout)
    policy.model.train()
    return policy


def dataset_size(config: TrainConfig) -> int | None:
    """Problems the task's training pool holds (None: the generator is unbounded)."""
    if config.task == "builtin":
        return None

    return len(data.load_gsm8k("train"))


def resolve_config(config: TrainConfig, policy: Policy) -> TrainConfig:
    """``config`` with the learning rate of what trains filled in (counts are resolved earlier)."""
    return dataclasses.replace(config, lr=default_lr(config, tiny=is_tiny(policy)))


def check_lengths(config: TrainConfig, policy: Policy, problems: list, *, name: str = "training") -> None:
    """Refuse, before building the dataset, problems whose clean prompt + solution is already longer
    than the context (injected errors only make sequences longer)."""
    context = _context(policy, config)
    longest, worst = max((sum(len(x) for x in data.encode_problem(p, policy.tokenizer)), p.id) for p in problems)
    if longest > context:
        raise ValueError(f"{name} problem {worst} is {longest} tokens long (prompt + solution), longer than the "
                         f"context of {context} ({'--max-length' if config.max_length else 'the model context'}); "
                         f"raise --max-length to at least {longest} or drop the long problems")


def check_dataset(dataset, mode: str, *, max_length: int, name: str = "training") -> None:
    """Refuse, before training, a dataset that lacks ``mode``'s columns or holds a too-long sequence."""
    need = required_columns(mode)
    missing = [c for c in need if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the {name} dataset has no column(s) {missing} needed by mode {mode!r} "
                         f"(it has {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError(f"the {name} dataset is empty")
    seq = "clean_ids" if mode == "clean" else "input_ids"
    longest = max(len(ids) for ids in dataset[seq])
    if longest > max_length:
        raise ValueError(f"the {name} dataset has a sequence of {longest} tokens, longer than the context "
                         f"of {max_length} (model context or --max-length); shorten the problems or raise it")


def _context(policy: Policy, config: TrainConfig) -> int:
    limits = [n for n in (config.max_length, policy.max_positions) if n]
    if not limits:
        raise ValueError("the model states no context length; pass --max-length")
    return min(limits)


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 matrices natively: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX (on such a CPU bf16 autocast trains the tiny policy at 1.44x the tokens/s of
    fp32, BENCHMARKS.md)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu probes: absent = no
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _use_bf16(config: TrainConfig) -> bool:
    if config.precision == "bf16":
        return True
    return config.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _distributed_cpu() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def training_arguments(config: TrainConfig, **overrides: Any) -> TrainingArguments:
    """The ``TrainingArguments`` of a run (checkpoints in ``OUT/checkpoints``)."""
    kw: dict[str, Any] = dict(
        output_dir=str(Path(config.out) / "checkpoints"), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        learning_rate=config.lr, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay, num_train_epochs=config.num_epochs, max_steps=config.max_steps,
        logging_steps=config.logging_steps, eval_strategy="steps", eval_steps=config.eval_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        seed=config.seed, data_seed=config.seed, bf16=_use_bf16(config),
        # bf16 autocast on a CPU (native bf16 matmuls on AVX512-BF16 / AMX) needs the CPU named
        use_cpu=_use_bf16(config) and not torch.cuda.is_available(), fp16=config.precision == "fp16",
        report_to=[], gradient_checkpointing=config.gradient_checkpointing,
        # non-reentrant checkpointing needs no input that requires grad (a frozen LoRA base has none)
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        remove_unused_columns=False,  # the collator reads segments / prompt_len / clean_ids
        prediction_loss_only=True, dataloader_num_workers=0, ddp_find_unused_parameters=False,
        # under torchrun on CPU, accelerate only sees the process group with an explicit gloo backend
        ddp_backend="gloo" if _distributed_cpu() else None,
        # per-rank token means, averaged by DDP; the cross-device variant scales logged/eval losses by world size
        average_tokens_across_devices=False,
        # metrics.json's train_tokens: every token fed, padding included (the compute; a 4-D mask
        # in the hard layout rules out transformers' non-padding count)
        include_num_input_tokens_seen="all",
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def fit(policy: Policy, train_dataset, eval_dataset, config: TrainConfig, *, collator=None,
        trainer_cls: type[Trainer] = CheckpointTrainer, args_overrides: dict | None = None,
        trainer_kwargs: dict | None = None, extra_metrics: dict | None = None) -> Path:
    """Train ``policy`` on the datasets and write the run's final artifacts; returns ``OUT``.

    ``collator`` defaults to the SFT ``Collator`` of ``config.mode`` (which refuses a policy
    without ⟨b⟩ for a backtrack mode). With ``config.resume`` training continues from the last
    complete checkpoint in ``OUT/checkpoints``; without it, existing checkpoints are an error.
    With ``config.plateau_patience`` the ``policy.plateau`` rule may end training early.
    """
    out = Path(config.out)
    if config.lr is None:
        config = resolve_config(config, policy)
    context = _context(policy, config)
    if collator is None:
        check_dataset(train_dataset, config.mode, max_length=context)
        check_dataset(eval_dataset, config.mode, max_length=context, name="eval")
        sdpa = getattr(policy.model.config, "_attn_implementation", "eager") == "sdpa"
        collator = Collator(mode=config.mode, pad_token_id=policy.tokenizer.pad_token_id,
                            backtrack_id=policy.backtrack_id, attn_form="bool" if sdpa else "float",
                            max_length=context)
    resume_from = last_complete_checkpoint(out / "checkpoints")
    if resume_from is not None and not config.resume:
        raise ValueError(f"{out} already holds checkpoints ({resume_from.name}); pass --resume to continue "
                         "that run, or choose another --out")
    policy.model.train()
    plateau = PlateauStop(config.plateau_patience, config.plateau_delta, keep_best=config.plateau_keep_best) \
        if config.plateau_patience else None
    kwargs = dict(trainer_kwargs or {})
    callbacks = [*(kwargs.pop("callbacks", None) or []), *([plateau] if plateau else [])]
    trainer = trainer_cls(model=policy.model, args=training_arguments(config, **(args_overrides or {})),
                          train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=collator,
                          callbacks=callbacks or None, **kwargs)
    if config.resume and resume_from is None:
        print(f"rewind: no complete checkpoint in {out / 'checkpoints'}; starting from scratch")
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    eval_metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        model = trainer.model.float() if _use_bf16(config) and config.dtype == "fp32" else trainer.model
        model.eval()
        dataclasses.replace(policy, model=model).save(out / "policy")  # an adapter folder under LoRA
        metrics = {**result.metrics, **eval_metrics, "global_step": trainer.state.global_step,
                   "world_size": trainer.args.world_size,
                   "resumed_from": resume_from.name if resume_from else None,
                   "train_examples": len(train_dataset), "eval_examples": len(eval_dataset),
                   **_stop_metrics(trainer, plateau), **(extra_metrics or {}),
                   "log_history": trainer.state.log_history}
        atomic_write_json(out / "train_config.json", dataclasses.asdict(config))
        atomic_write_json(out / "metrics.json", metrics)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank returns before the artifacts exist
    return out


def _stop_metrics(trainer: Trainer, plateau: PlateauStop | None) -> dict:
    """How training ended: the plateau rule's stop (if any), the best eval and the tokens trained on."""
    best_loss, best_step = best_eval(trainer.state.log_history)
    stop = plateau.summary() if plateau else {"stopped_early": False, "plateau_step": None}
    return {**stop, "best_eval_loss": best_loss, "best_eval_step": best_step,
            "train_tokens": int(trainer.state.num_input_tokens_seen)}


def _problems(config: TrainConfig, n: int, split: str) -> list:
    if config.task == "builtin":
        return list(data.generate_problems(n, seed=config.seed, split=split))
    problems = list(data.load_gsm8k("train"))
    # GSM8K has no validation split: the eval problems are the tail of train, disjoint from the head.
    resolve_counts(config, len(problems))  # raises if num_problems + num_eval do not fit
    return problems[:n] if split == "train" else problems[-n:]


def build_sft_datasets(config: TrainConfig, policy: Policy):
    """(train, eval) ``datasets.Dataset`` of segmented examples; deterministic in ``config.seed``
    so every DDP rank builds the same data."""
    if config.num_problems is None:
        config = resolve_counts(config, dataset_size(config))
    train_problems = _problems(config, config.num_problems, "train")
    eval_problems = _problems(config, config.num_eval, "validation")
    check_lengths(config, policy, train_problems)
    check_lengths(config, policy, eval_problems, name="eval")
    train = data.build_dataset("sft", train_problems, policy.tokenizer, seed=config.seed)
    evals = data.build_dataset("sft", eval_problems, policy.tokenizer, seed=config.seed + 1)
    return train, evals


def harvest_datasets(config: TrainConfig, policy: Policy):
    """On-policy round: sample ``policy`` (the ``harvest_from`` run's) on training problems, turn its
    own wrong steps into examples (``policy.data.examples_from_samples``), and add them to the
    injected examples. Returns ``(train, eval, stats)``. Sampling is seeded, so every DDP rank
    harvests the same examples."""
    from datasets import Dataset, concatenate_datasets

    problems = _problems(config, config.harvest_problems, "train")
    prompts = [data.encode_problem(p, policy.tokenizer)[0] for p in problems]
    room = _context(policy, config) - max(len(p) for p in prompts)
    if room < 1:
        raise ValueError(f"the harvest prompts fill the whole context of {_context(policy, config)} tokens")
    policy.model.eval()
    generations = generate(policy, prompts, do_sample=True, temperature=config.harvest_temperature,
                           seed=config.seed, max_new_tokens=room, progress=True)
    policy.model.train()
    harvested = [ex for p, g in zip(problems, generations)
                 for ex in data.examples_from_samples(p, [g.ids], policy.tokenizer)]
    train, evals = build_sft_datasets(config, policy)
    stats = {"harvest_from": str(config.harvest_from), "harvest_samples": len(generations),
             "harvested_examples": len(harvested)}
    if harvested:
        rows = [{c: getattr(ex, c) for c in train.column_names} for ex in harvested]
        train = concatenate_datasets([train, Dataset.from_list(rows, features=train.features)])
    return train.shuffle(seed=config.seed), evals, stats


def train_sft(config: TrainConfig) -> Path:
    """Run SFT (or, with ``harvest_from``, an on-policy round) as configured; returns the run folder."""
    if config.mode == "dpo":
        raise ValueError("mode 'dpo' runs through policy.dpo.train_dpo")
    config = resolve_counts(config, dataset_size(config))  # counts that cannot hold fail before any work
    policy = start_policy(config)
    config = resolve_config(config, policy)
    extra: dict = {}
    if config.harvest_from:
        train, evals, extra = harvest_datasets(config, policy)
    else:
        train, evals = build_sft_datasets(config, policy)
    return fit(policy, train, evals, config, extra_metrics=extra)
