"""Reference "verifiers" to put beside the learned one (DESIGN §4: always an oracle and a trivial
baseline): the step checker as an oracle, random scores, and the step's own log-prob.

Each offers ``score_steps(views) -> P(error) [N]`` like ``StepVerifier``, so search runs them
through the same code path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from verifier.step_data import step_label

__all__ = ["CheckerOracle", "LogprobRanker", "RandomRanker"]


class CheckerOracle:
    """P(error) = 1 when ``step_label`` finds an error in the step (the checker sees the text), else 0.
    It reads the prompt and prefix the search passes in the view; an oracle no model could be."""

    def __init__(self, hidden_size: int | None = None):
        self.hidden_size = hidden_size

    def score_steps(self, views: Sequence) -> torch.Tensor:
        return torch.tensor([float(step_label(v.prompt, v.prefix, v.text, "newline")[0]) for v in views])


class RandomRanker:
    """Scores uniform in [0, 1), fixed per (seed, prompt, prefix, step text): a ranker with no signal."""

    def __init__(self, seed: int = 0, hidden_size: int | None = None):
        self.seed, self.hidden_size = seed, hidden_size

    def score_steps(self, views: Sequence) -> torch.Tensor:
        out = []
        for v in views:
            h = hashlib.sha256(f"{self.seed}\0{v.prompt}\0{v.prefix}\0{v.text}\0{v.depth}".encode()).digest()
            out.append(int.from_bytes(h[:8], "big") / 2**64)
        return torch.tensor(out)


class LogprobRanker:
    """P(error) = 1 - exp(mean token log-prob of the step): the policy's own confidence."""

    def __init__(self, hidden_size: int | None = None):
        self.hidden_size = hidden_size

    def score_steps(self, views: Sequence) -> torch.Tensor:
        return torch.tensor([1.0 - float(v.logprobs.float().mean().exp()) for v in views])
