"""LoRA (Hu et al. 2021) through PEFT, with the ⟨b⟩ embedding row trainable.

The base stays frozen; low-rank adapters train on the target linear layers. ⟨b⟩ is a new token
whose row starts at the mean embedding, so it has to learn: PEFT's ``trainable_token_indices``
trains exactly that row (a delta on top of the frozen embedding). With tied embeddings the same
delta serves the input embedding and the LM head, so P(⟨b⟩) moves as the row trains.
"""

from __future__ import annotations

import re

import torch

from policy.model import Policy

__all__ = ["LINEAR_ALL", "apply_lora", "check_lora_targets", "lora_targets"]

LINEAR_ALL = "all-linear"  # PEFT's name for every linear layer except the LM head


def lora_targets(spec: str) -> str | list[str]:
    """``all-linear`` or a comma-separated list of module names (``q_proj,v_proj``)."""
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("--lora-targets is empty; give all-linear or module names like q_proj,v_proj")
    if spec == LINEAR_ALL:
        return LINEAR_ALL
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.]+", n)]
    if bad:
        raise ValueError(f"--lora-targets: {bad} are not module names (letters, digits, _ and .)")
    return names


def check_lora_targets(model: torch.nn.Module, targets: str | list[str]) -> None:
    """Refuse a target that matches no linear module (PEFT matches on the name's last parts)."""
    if targets == LINEAR_ALL:
        return
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in linear):
            raise ValueError(f"LoRA target {t!r} matches no linear module of {type(model).__name__}; "
                             f"its linear layers are named {leaves}")


def apply_lora(policy: Policy, *, r: int, alpha: float | None = None, targets: str = LINEAR_ALL,
               dropout: float = 0.0) -> Policy:
    """Wrap ``policy.model`` in a PEFT LoRA model (rank ``r``, scale ``alpha / r``; alpha defaults
    to ``2r``) whose ⟨b⟩ embedding row is trainable too. Returns a new ``Policy`` sharing the tokenizer."""
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {r}")
    if policy.backtrack_id is None:
        raise ValueError("LoRA training of a backtrack policy needs ⟨b⟩ in the tokenizer")
    if policy.is_adapter:
        raise ValueError("the policy already carries a PEFT adapter; merge it first (rewind train-policy --merge)")
    target = lora_targets(targets)
    check_lora_targets(policy.model, target)
    emb_name = next(n for n, m in policy.model.named_modules() if m is policy.model.get_input_embeddings())
    config = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules=target,
                        lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
                        trainable_token_indices={emb_name.rsplit(".", 1)[-1]: [policy.backtrack_id]})
    model = get_peft_model(policy.model, config)
    return Policy(model=model, tokenizer=policy.tokenizer, prompt_format=policy.prompt_format, origin=policy.origin)
