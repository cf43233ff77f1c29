"""Segmented training records: the per-token tags of an example and the DPO pair record.

Everything is in token-id space. An ``Example`` is ``prompt | clean | error | ⟨b⟩×k | correction``
(possibly several error / ⟨b⟩ / correction groups); applying the backspaces gives ``clean_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from transformers import PreTrainedTokenizerBase

from policy.layout import apply_backspaces

__all__ = ["DPOPair", "Example", "Segment", "check_example", "render_example"]


class Segment(IntEnum):
    """Tag of one token. CORRECTION is every non-error, non-⟨b⟩ token after the first error."""

    PROMPT = 0
    CLEAN = 1
    ERROR = 2
    BACKTRACK = 3
    CORRECTION = 4


@dataclass(frozen=True)
class Example:
    """One SFT example. ``input_ids [L]`` and ``segments [L]`` (``Segment`` values) have equal
    length; the first ``prompt_len`` tokens are the prompt. ``clean_ids`` is the prompt plus the
    clean solution: ``apply_backspaces(input_ids, ⟨b⟩, prompt_len=prompt_len) == clean_ids``.
    ``error_kind`` is ``None`` for a clean example ("+"-joined when it holds several errors);
    ``error_step`` is the solution line of the first error."""

    input_ids: tuple[int, ...]
    segments: tuple[int, ...]
    prompt_len: int
    clean_ids: tuple[int, ...]
    problem_id: str
    error_kind: str | None
    error_step: int | None


@dataclass(frozen=True)
class DPOPair:
    """A step-level preference pair; ``chosen_ids`` and ``rejected_ids`` continue ``prompt_ids``.

    ``kind="backtrack"``: ``prompt_ids`` = question + clean prefix + error tokens; chosen = the
    ⟨b⟩-run deleting the error, the correction and the rest; rejected = the error carried forward.
    ``kind="no_backtrack"``: ``prompt_ids`` = question + a clean prefix; chosen = the clean
    continuation; rejected = a needless ⟨b⟩-run that rewrites the same tokens. Continuations end
    with EOS only when they reach the end of the solution. ``prompt_len`` counts the question
    part of ``prompt_ids`` (no ⟨b⟩ may delete it).
    """

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    prompt_len: int
    kind: str
    problem_id: str = ""
    error_kind: str | None = None


def check_example(example: Example, backtrack_id: int) -> None:
    """Raise ``ValueError`` unless the example's tags and backspace invariant hold."""
    ids, seg = example.input_ids, example.segments
    if len(ids) != len(seg):
        raise ValueError(f"example {example.problem_id}: {len(ids)} ids but {len(seg)} segment tags")
    if any(s != Segment.PROMPT for s in seg[: example.prompt_len]) or Segment.PROMPT in seg[example.prompt_len :]:
        raise ValueError(f"example {example.problem_id}: PROMPT tags do not match prompt_len={example.prompt_len}")
    if any((t == backtrack_id) != (s == Segment.BACKTRACK) for t, s in zip(ids[example.prompt_len :], seg[example.prompt_len :])):
        raise ValueError(f"example {example.problem_id}: BACKTRACK tags do not match the ⟨b⟩ tokens")
    if apply_backspaces(list(ids), backtrack_id, prompt_len=example.prompt_len) != list(example.clean_ids):
        raise ValueError(f"example {example.problem_id}: applying the backspaces does not give clean_ids")


_TAG_CHARS = "PCEBR"  # PROMPT CLEAN ERROR BACKTRACK coRRECTION


def render_example(ids: Sequence[int], segments: Sequence[int], tokenizer: PreTrainedTokenizerBase,
                   backtrack_id: int) -> tuple[str, str]:
    """Two aligned lines for reading an example: the tokens (⟨b⟩ as ``⌫``, newline as ``⏎``, EOS
    as ``∎``) and, under each token's first character, its tag letter ``P C E B R`` padded with
    ``.`` for multi-character tokens."""
    text, tags = [], []
    for t, s in zip(ids, segments):
        if t == backtrack_id:
            piece = "⌫"
        elif t == tokenizer.eos_token_id:
            piece = "∎"
        else:
            piece = tokenizer.decode([t]).replace("\n", "⏎") or "?"
        text.append(piece)
        tags.append(_TAG_CHARS[s] + "." * (len(piece) - 1))
    return "".join(text), "".join(tags)
