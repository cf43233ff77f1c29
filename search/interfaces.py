"""What search needs from a policy and a verifier (DESIGN §6).

``search`` imports neither ``policy`` nor ``verifier``: they implement these protocols. A policy
object passed to ``search.solve`` offers ``.engine(share_kv=...) -> PolicyEngine``; a verifier
offers ``.score(hidden) -> probabilities``.

KV handles (``state``) are opaque to search. A handle's KV segment stays in memory while the
handle is not released or while a descendant still needs it; ``release`` says search will
expand that node no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ExpandResult", "PolicyEngine", "Prompt", "StepRequest", "StepSample", "StepVerifier", "StepView", "Verifier"]


@dataclass(frozen=True)
class Prompt:
    """A prefilled question: the root of a tree."""

    state: Any  # opaque KV handle of the prompt
    ids: tuple[int, ...]  # prompt token ids
    text: str  # the prompt text the model saw
    tokens_run: int  # tokens fed through the model to build it
    kv_bytes: int  # bytes of its KV segment


@dataclass(frozen=True)
class StepRequest:
    """Draw ``len(seeds)`` children of the node whose handle is ``state``."""

    state: Any
    seeds: tuple[int, ...]  # one per child; a child's tokens depend only on its seed and the prefix
    depth: int = 0  # depth of the node being expanded (0 = root); engines may cap steps by it
    # A rewrite (hard backtracking from inside a step): every child starts with these alive tokens,
    # fed as if chosen (their log-probs count), and may not choose ``ban`` right after them.
    prefix: tuple[int, ...] = ()
    ban: int | None = None


@dataclass(frozen=True)
class StepSample:
    """One sampled step (a child node)."""

    ids: tuple[int, ...]  # alive tokens of the step after in-step backspaces
    raw_ids: tuple[int, ...]  # tokens as sampled, ⟨b⟩ included
    text: str  # decoded alive text
    raw_text: str  # decoded raw text, ⟨b⟩ visible
    logprob: float  # sum of log-probs of raw_ids under the sampling distribution's base model
    backtracks: tuple[tuple[int, int], ...]  # (raw index in step, run length)
    hidden: torch.Tensor | None  # [H] fp32 last-layer hidden state at the step's last fed token
    p_backtrack_policy: float  # the policy's P(⟨b⟩) for the token after the step
    state: Any | None  # the child's KV handle (None when rejected)
    rejected: bool  # a ⟨b⟩-run reached past the step's start: the policy rejects the parent
    finished: bool  # the step ends the solution (EOS, or the '#### answer' line)
    answer: str | None  # the final answer when finished
    kv_bytes: int  # bytes of the child's KV segment (0 when rejected)
    stop_reason: str  # "newline", "eos", "answer", "max_step_tokens", "max_backtracks", "rejected", "context"
    # The verifier's view of the step (None when rejected): one row per alive step token, T >= 1
    # (a step with no fed token is seen through the parent's last state, with zeros below).
    step_hidden: torch.Tensor | None = None  # [T, H] fp32 last-layer hidden states of the alive step tokens
    step_logprobs: torch.Tensor | None = None  # [T] fp32 log p(token | alive prefix) at temperature 1
    step_entropies: torch.Tensor | None = None  # [T] fp32 entropy (nats) of the distribution each token came from


@dataclass(frozen=True)
class ExpandResult:
    """The children of one ``StepRequest`` and what they cost."""

    samples: tuple[StepSample, ...]
    tokens_run: int  # tokens fed through the model for this request (prefix re-encoding included)
    tokens_saved: int  # prefix tokens that KV sharing did not recompute


@runtime_checkable
class PolicyEngine(Protocol):
    hidden_size: int

    def start(self, questions: Sequence[str]) -> list[Prompt]:
        """Prefill the prompts of ``questions`` (one batch)."""
        ...

    def expand(
        self,
        requests: Sequence[StepRequest],
        *,
        temperature: float,
        top_p: float,
        max_step_tokens: int,
    ) -> list[ExpandResult]:
        """Sample the children of every request in one batch. ``temperature == 0`` is greedy."""
        ...

    def release(self, state: Any) -> None:
        """Search will draw no more children from ``state``."""
        ...

    def solution_text(self, prompt_state: Any, ids: Sequence[int]) -> str:
        """Decode alive solution ids (prompt excluded) to text."""
        ...


@dataclass(frozen=True)
class StepView:
    """What a step verifier reads of one new node: its step, as decoding computed it."""

    hidden: torch.Tensor  # [T, H] fp32 last-layer hidden states of the step's alive tokens
    logprobs: torch.Tensor  # [T] fp32 log-prob of each alive token under the policy (temperature 1)
    entropies: torch.Tensor  # [T] fp32 entropy of each token's next-token distribution
    depth: int  # depth of the node (1 = the first step)
    text: str = ""  # the step's alive text (for checker baselines; a learned verifier reads the tensors)
    prefix: str = ""  # the alive solution text before the step
    prompt: str = ""  # the prompt the policy saw
    ids: tuple[int, ...] = ()  # the step's alive token ids (T of them; empty when unknown)

    @classmethod
    def of(cls, sample: StepSample, depth: int, *, prefix: str = "", prompt: str = "") -> StepView:
        if sample.step_hidden is None:
            raise RuntimeError("the engine returned a step without its hidden states; a step verifier needs them")
        ids = tuple(sample.ids) if len(sample.ids) == sample.step_hidden.shape[0] else ()
        return cls(sample.step_hidden, sample.step_logprobs, sample.step_entropies, depth, sample.text, prefix, prompt,
                   ids)


@runtime_checkable
class StepVerifier(Protocol):
    """A verifier that reads whole steps: ``score_steps(views) -> P(step holds an error) [N]``."""

    hidden_size: int

    def score_steps(self, steps: Sequence[StepView]) -> torch.Tensor:
        ...


@runtime_checkable
class Verifier(Protocol):
    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """P(backtrack) ``[N]`` in [0, 1] from policy hidden states ``[N, H]``."""
        ...
