"""What every benchmark group shares: the policy on its device, the problems, and the peer's
``model.generate`` call with the same prompts and the same number of new tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from experiments.bench.config import BenchConfig, Sizes
from policy import load_policy, tiny_policy
from policy.data import format_prompt, generate_problems
from policy.model import Policy

__all__ = ["Setup"]


@dataclass
class Setup:
    cfg: BenchConfig
    policy: Policy
    device: torch.device
    problems: list[Any]  # built-in test problems (policy.data.Problem)
    n_params: int

    @property
    def sizes(self) -> Sizes:
        return self.cfg.sizes

    @classmethod
    def build(cls, cfg: BenchConfig) -> Setup:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # generate() warns about flags it ignores; not our concern here
        device = cfg.torch_device
        policy = tiny_policy(seed=cfg.seed) if cfg.model == "tiny" else load_policy(cfg.model)
        policy.model.to(device).eval()
        n_problems = max(max(cfg.sizes.scale_problems), max(cfg.sizes.decode_batches), 16)
        problems = generate_problems(n_problems, seed=cfg.seed, split="test")
        n_params = sum(p.numel() for p in policy.model.parameters())
        return cls(cfg=cfg, policy=policy, device=device, problems=problems, n_params=n_params)

    def prompts(self, n: int) -> list[str]:
        return [format_prompt(p.question) for p in self.problems[:n]]

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``/``attention_mask`` ``[B, T]`` for ``model.generate``."""
        tok = self.policy.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def hf_generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """``model.generate`` with ⟨b⟩ suppressed (the peer has no use for it), no early stop on
        ``####``; returns the new tokens ``[B * num_return_sequences, n]``."""
        tok = self.policy.tokenizer
        bid = self.policy.backtrack_id
        kwargs.setdefault("do_sample", False)
        with torch.no_grad():
            out = self.policy.model.generate(**enc, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                             suppress_tokens=[bid] if bid is not None else None, **kwargs)
        return out[:, enc["input_ids"].shape[1]:]

    def count_new(self, new: torch.Tensor) -> int:
        """Tokens ``generate`` produced: each row up to and including its first EOS (the rest is padding)."""
        eos = self.policy.tokenizer.eos_token_id
        total = 0
        for row in new.tolist():
            total += row.index(eos) + 1 if eos in row else len(row)
        return total
