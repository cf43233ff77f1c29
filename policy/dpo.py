"""Step-level DPO from an SFT run: sigmoid DPO loss with a frozen reference, plus NLL on the chosen side.

A pair shares a prompt (question + clean prefix + error, or a clean prefix) and has two
completions: chosen (⟨b⟩-run + correction + rest, or "go on") and rejected (the error carried
forward, or a needless ⟨b⟩). Both sides are scored with the `hard` layout of DESIGN §1 over
prompt + completion, so the correction's log-prob is the one decoding will see (the error is gone
from its cache). Completions are taken as the data gives them: no EOS is appended.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from policy import data
from policy.collator import IGNORE_INDEX, Collator
from policy.locate import locate
from policy.lora import apply_lora
from policy.model import Policy, load_policy, merge_lora
from policy.sft import (
    _DTYPES,
    CheckpointTrainer,
    _context,
    _problems,
    dataset_size,
    fit,
    resolve_config,
    resolve_policy_dir,
)
from policy.train_config import TrainConfig, resolve_counts

__all__ = ["DPO_COLUMNS", "DPOCollator", "DPOTrainer", "check_pairs", "model_sequence_logps", "sequence_logps",
           "train_dpo"]

DPO_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids", "prompt_len")


@dataclass(frozen=True, kw_only=True)
class DPOCollator:
    """Pairs → one `hard`-layout batch of ``2B`` rows: the B chosen sequences, then the B rejected.

    Row i is ``prompt_ids + chosen_ids`` (i < B) or ``prompt_ids + rejected_ids``; ``labels`` are
    the completion tokens (prompt tokens -100), so ``sequence_logps`` sums exactly the completion.
    """

    pad_token_id: int
    backtrack_id: int
    attn_form: str = "float"
    max_length: int | None = None

    def __call__(self, pairs: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        hard = Collator(mode="hard", pad_token_id=self.pad_token_id, backtrack_id=self.backtrack_id,
                        attn_form=self.attn_form, max_length=self.max_length)
        rows = []
        for side in ("chosen_ids", "rejected_ids"):
            for pair in pairs:
                prompt, completion = list(pair["prompt_ids"]), list(pair[side])
                if not completion:
                    raise ValueError(f"a DPO pair has an empty {side}")
                ids = prompt + completion
                labels = [IGNORE_INDEX] * len(prompt) + completion
                rows.append((ids, labels, int(pair["prompt_len"])))
        return hard.pad(rows)


LOGP_CHUNK = 1024  # labelled positions whose vocabulary logits exist at once (memory, not math)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row of ``logits [K, V]``: the target's logit minus logsumexp, in fp32 per
    chunk of rows, so no full-vocabulary fp32 log-softmax of the whole batch ever exists."""
    out = []
    for i in range(0, logits.shape[0], LOGP_CHUNK):
        chunk = logits[i:i + LOGP_CHUNK].float()  # (k, V): one chunk in fp32 at a time
        out.append(chunk.gather(-1, targets[i:i + LOGP_CHUNK, None]).squeeze(-1) - chunk.logsumexp(-1))
    return torch.cat(out) if out else logits.new_zeros(0, dtype=torch.float32)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens per row, and their count: ``[N]``, ``[N]``.

    ``logits [N, L, V]`` and ``labels [N, L]`` in the transformers convention (the state at t-1
    predicts ``labels[t]``). Only labelled positions are scored (gathered first, chunked after).
    """
    labels = labels[:, 1:]  # (N, L-1)
    keep = labels != IGNORE_INDEX
    rows, cols = keep.nonzero(as_tuple=True)  # (K,), (K,)
    token_logp = _token_logps(logits[rows, cols], labels[rows, cols])  # (K,)
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device).index_add(0, rows, token_logp)
    return total, keep.sum(-1)


def model_sequence_logps(model: torch.nn.Module, feed: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sequence_logps`` without the ``[N, L, V]`` logits: the decoder's last hidden states
    ``[N, L, H]`` are gathered at the labelled positions and only those go through the LM head,
    chunk by chunk. Models that post-process logits (soft-capping, scaling) take the plain path."""
    cfg = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    post = any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"))
    if head is None or post or not hasattr(model, "get_decoder"):
        return sequence_logps(model(**feed).logits, labels)
    hidden = model.get_decoder()(**feed, use_cache=False).last_hidden_state  # (N, L, H)
    shifted = labels[:, 1:]  # the state at t-1 predicts labels[t]
    keep = shifted != IGNORE_INDEX
    rows, cols = keep.nonzero(as_tuple=True)  # (K,), (K,)
    targets = shifted[rows, cols]
    states = hidden[rows, cols]  # (K, H)
    parts = []
    for i in range(0, states.shape[0], LOGP_CHUNK):
        parts.append(_token_logps(head(states[i:i + LOGP_CHUNK]), targets[i:i + LOGP_CHUNK]))
    token_logp = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device).index_add(0, rows, token_logp)
    return total, keep.sum(-1)


class DPOTrainer(CheckpointTrainer):
    """``Trainer`` with the DPO + NLL loss; ``ref_model`` is frozen and never saved."""

    def __init__(self, *args, ref_model: torch.nn.Module, beta: float, nll_weight: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.beta, self.nll_weight = beta, nll_weight
        self.model_accepts_loss_kwargs = False  # the loss is a mean per pair: let the Trainer scale it for accumulation
        self._stats: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids")}
        logp, n_tok = model_sequence_logps(model, feed, inputs["labels"])
        with torch.no_grad():
            ref_logp, _ = model_sequence_logps(self.ref_model, feed, inputs["labels"])
        B = logp.shape[0] // 2
        chosen_ratio = logp[:B] - ref_logp[:B]  # log πθ(y_w|x) − log π_ref(y_w|x)
        rejected_ratio = logp[B:] - ref_logp[B:]
        # Rafailov et al. 2023, eq. 7: L_DPO = −log σ(β·log πθ(y_w|x)/π_ref(y_w|x) − β·log πθ(y_l|x)/π_ref(y_l|x)).
        # Here x is a step-level prefix (question + clean steps [+ error]) and y one continuation.
        margin = self.beta * (chosen_ratio - rejected_ratio)  # (B,)
        dpo = -F.logsigmoid(margin).mean()
        # Departure from eq. 7: an NLL term on the chosen side (per token), as in RPO (Pang et al. 2024),
        # keeps the corrections' likelihood from drifting down while the margin grows.
        nll = -(logp[:B].sum() / n_tok[:B].sum().clamp(min=1))
        loss = dpo + self.nll_weight * nll
        split = "train" if model.training else "eval"
        for k, v in (("dpo_loss", dpo), ("nll", nll), ("reward_margin", margin.mean() / self.beta),
                     ("reward_accuracy", (margin > 0).float().mean())):
            self._stats.setdefault(f"{split}_{k}" if split == "eval" else k, []).append(float(v.detach()))
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        prefix = "eval_" if any(k.startswith("eval_") for k in logs) else ""
        for k in [k for k in self._stats if k.startswith("eval_") == bool(prefix)]:
            vals = self._stats.pop(k)
            logs[k] = sum(vals) / len(vals)
        super().log(logs, *args, **kwargs)


def check_pairs(dataset, *, max_length: int, name: str = "training") -> None:
    """Refuse, before training, pairs without the DPO columns or longer than the context."""
    missing = [c for c in DPO_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the {name} DPO dataset has no column(s) {missing} (it has {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError(f"the {name} DPO dataset is empty")
    longest = max(len(p) + max(len(c), len(r)) for p, c, r in
                  zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))
    if longest > max_length:
        raise ValueError(f"the {name} DPO dataset has a prompt + completion of {longest} tokens, longer than "
                         f"the context of {max_length}")


def init_policy(config: TrainConfig) -> Policy:
    """The SFT policy DPO starts from (also the frozen reference); it must already know ⟨b⟩.

    A LoRA init trained with a new adapter (``lora_r``) is first merged into ``OUT/init-merged``:
    the new adapter then names that folder as its base. Merging only in memory would leave it naming
    the bare base, and loading the DPO run would silently drop the SFT adapter."""
    source = resolve_policy_dir(config.init)
    if config.lora_r and locate(source).kind == "adapter":
        merged = Path(config.out) / "init-merged"
        if not (merged / "config.json").exists():
            merge_lora(source, merged, dtype=_DTYPES[config.dtype])
        source = merged
    policy = load_policy(source, attn_implementation=config.attn_implementation,
                         add_backtrack=False, dtype=_DTYPES[config.dtype])
    if policy.backtrack_id is None:
        raise ValueError(f"{config.init} has no backtrack token: DPO starts from an SFT run trained with ⟨b⟩")
    return policy


def fit_dpo(policy: Policy, train_pairs, eval_pairs, config: TrainConfig,
            reference: torch.nn.Module | None = None, **fit_kwargs) -> Path:
    """DPO-train ``policy`` on pair datasets (reference: a frozen copy of ``policy`` unless given)."""
    if policy.backtrack_id is None:
        raise ValueError("DPO needs a policy with the backtrack token (train it with SFT first)")
    context = _context(policy, config)
    check_pairs(train_pairs, max_length=context)
    check_pairs(eval_pairs, max_length=context, name="eval")
    sdpa = getattr(policy.model.config, "_attn_implementation", "eager") == "sdpa"
    collator = DPOCollator(pad_token_id=policy.tokenizer.pad_token_id, backtrack_id=policy.backtrack_id,
                           attn_form="bool" if sdpa else "float", max_length=context)
    reference = copy.deepcopy(policy.model) if reference is None else reference
    if config.lora_r and not policy.is_adapter:
        policy = apply_lora(policy, r=config.lora_r, alpha=config.lora_alpha, targets=config.lora_targets,
                            dropout=config.lora_dropout)
    return fit(policy, train_pairs, eval_pairs, config, collator=collator, trainer_cls=DPOTrainer,
               trainer_kwargs={"ref_model": reference, "beta": config.beta, "nll_weight": config.nll_weight},
               args_overrides={"label_names": ["labels"]}, **fit_kwargs)


def train_dpo(config: TrainConfig) -> Path:
    """``rewind train-policy --mode dpo --init RUN``: pairs from the task's problems, then ``fit_dpo``."""
    if config.mode != "dpo":
        raise ValueError(f"train_dpo runs mode 'dpo', got {config.mode!r}")

    config = resolve_counts(config, dataset_size(config))  # counts that cannot hold fail before any work
    policy = init_policy(config)
    config = resolve_config(config, policy)
    train = data.build_dataset("dpo", _problems(config, config.num_problems, "train"), policy.tokenizer,
                               seed=config.seed)
    evals = data.build_dataset("dpo", _problems(config, config.num_eval, "validation"), policy.tokenizer,
                               seed=config.seed + 1)
    return fit_dpo(policy, train, evals, config, extra_metrics={"init": str(config.init)})
