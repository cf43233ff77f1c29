"""Next-token choice: logit processing and seeded per-row sampling.

Each row draws from its own ``torch.Generator``, so what a row samples depends only on its seed
and its own history, never on which other rows share the batch (batched == one-by-one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SamplingConfig", "choose_tokens", "row_generators"]


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature == 0`` or ``do_sample=False`` is greedy."""

    do_sample: bool = False
    temperature: float = 1.0  # softmax temperature, > 0 when sampling
    top_p: float = 1.0  # nucleus mass in (0, 1]

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


def row_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF)
        gens.append(g)
    return gens


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``top_p`` (per row)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # drop a token when the mass *before* it already reaches top_p (the top token always stays)
    drop = probs.cumsum(-1) - probs >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def choose_tokens(
    logits: torch.Tensor, cfg: SamplingConfig, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """Pick one token per row from processed ``logits [B, V]`` (fp32). Returns ``[B]`` long."""
    if cfg.greedy:
        return logits.argmax(-1)
    scaled = logits / cfg.temperature
    if cfg.top_p < 1:
        scaled = _top_p_filter(scaled, cfg.top_p)
    probs = scaled.softmax(-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    for r, g in enumerate(generators):
        out[r] = torch.multinomial(probs[r], 1, generator=g)[0]
    return out
