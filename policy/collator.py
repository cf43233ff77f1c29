"""The training collator: segmented examples → ``input_ids``, ``labels``, ``attention_mask``, ``position_ids``.

Four modes (DESIGN §3) differ in which tokens are targets and in how tokens attend:

| mode     | sequence      | targets                                   | attention / positions |
| -------- | ------------- | ----------------------------------------- | --------------------- |
| `clean`  | ``clean_ids`` | every non-prompt token                    | causal                |
| `naive`  | ``input_ids`` | every non-prompt token, errors included   | causal                |
| `masked` | ``input_ids`` | non-prompt tokens except ERROR tokens     | causal                |
| `hard`   | ``input_ids`` | as `masked`                               | ``cache_layout`` (§1) |

Labels follow the transformers convention: aligned with ``input_ids`` (``labels[t]`` is the
target for the state at ``t - 1``; the model shifts). "Errors masked" therefore removes the loss
of *predicting* an ERROR token, while the first ⟨b⟩, predicted from the last error token's state,
keeps its loss: that is the very decision the policy must learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from policy.layout import cache_layout, layout_to_4d_mask

__all__ = ["IGNORE_INDEX", "MODES", "Collator", "Mode", "required_columns"]

IGNORE_INDEX = -100  # the label value cross-entropy ignores (transformers and torch convention)
Mode = Literal["clean", "naive", "masked", "hard"]
MODES: tuple[str, ...] = ("clean", "naive", "masked", "hard")
BACKTRACK_MODES = ("naive", "masked", "hard")

# policy.data.Segment values (an IntEnum); repeated as ints so this module does not import the data stack.
_PROMPT, _ERROR = 0, 2

_COLUMNS: dict[str, tuple[str, ...]] = {
    "clean": ("clean_ids", "prompt_len"),
    "naive": ("input_ids", "prompt_len"),
    "masked": ("input_ids", "segments", "prompt_len"),
    "hard": ("input_ids", "segments", "prompt_len"),
}


def required_columns(mode: str) -> tuple[str, ...]:
    """The example fields that ``mode`` reads."""
    if mode not in _COLUMNS:
        raise ValueError(f"unknown training mode {mode!r}; expected one of {MODES}")
    return _COLUMNS[mode]


def _field(example: Mapping[str, Any] | Any, name: str) -> Any:
    # Examples come as dataset rows (dicts) or as policy.data.Example records.
    if isinstance(example, Mapping):
        if name not in example:
            raise ValueError(f"example has no {name!r} field (has {sorted(example)}); it is needed for this mode")
        return example[name]
    if not hasattr(example, name):
        raise ValueError(f"example {type(example).__name__} has no {name!r} field; it is needed for this mode")
    return getattr(example, name)


@dataclass(frozen=True, kw_only=True)
class Collator:
    """Turns a list of segmented examples into one right-padded training batch.

    Fields: ``mode``; ``pad_token_id``; ``backtrack_id`` (id of ⟨b⟩, required by every mode
    but `clean`); ``attn_form`` the 4D-mask form of `hard` ("float": additive, 0 / dtype-min,
    accepted by every attention implementation; "bool": True = attend, SDPA only);
    ``mask_dtype`` the float mask's dtype; ``max_length`` refuse longer sequences (None: no cap).

    Returns ``input_ids [B, L]`` long, ``labels [B, L]`` long (-100 = no loss),
    ``position_ids [B, L]`` long, and ``attention_mask``: ``[B, L]`` long (1 = real token) in the
    causal modes, ``[B, 1, L, L]`` in `hard`. Pad positions get label -100 and position 0; in
    `hard` a pad row attends only to itself (no row may be empty) and no real token sees a pad.

    Worked example (repeated in ``tests/test_collator.py``). Prompt ``10 11``, clean step ``12``,
    error ``13``, ⟨b⟩ = ``99``, correction ``14``, eos ``2``; a second example is clean only::

        a = {"input_ids": [10, 11, 12, 13, 99, 14, 2], "segments": [0, 0, 1, 2, 3, 4, 1],
             "prompt_len": 2, "clean_ids": [10, 11, 12, 14, 2]}
        b = {"input_ids": [10, 11, 12, 2], "segments": [0, 0, 1, 1],
             "prompt_len": 2, "clean_ids": [10, 11, 12, 2]}
        Collator(mode=..., pad_token_id=0, backtrack_id=99)([a, b])

    `clean`::

        input_ids      [[10, 11, 12, 14, 2], [10, 11, 12, 2, 0]]
        labels         [[-100, -100, 12, 14, 2], [-100, -100, 12, 2, -100]]
        attention_mask [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
        position_ids   [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]]

    `naive` (the error 13 is a target)::

        input_ids      [[10, 11, 12, 13, 99, 14, 2], [10, 11, 12, 2, 0, 0, 0]]
        labels         [[-100, -100, 12, 13, 99, 14, 2], [-100, -100, 12, 2, -100, -100, -100]]
        attention_mask [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]
        position_ids   [[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 0, 0, 0]]

    `masked`: as `naive` but ``labels[0] = [-100, -100, 12, -100, 99, 14, 2]``.

    `hard`: labels as `masked`; the correction 14 takes the error's position 3 and no longer sees
    13 or ⟨b⟩; ``attention_mask[i, 0]`` is 0.0 where the row below shows 1, dtype-min where 0::

        position_ids [[0, 1, 2, 3, 4, 3, 4], [0, 1, 2, 3, 0, 0, 0]]
        example a: 10 [1 0 0 0 0 0 0]    example b: 10 [1 0 0 0 0 0 0]
                   11 [1 1 0 0 0 0 0]               11 [1 1 0 0 0 0 0]
                   12 [1 1 1 0 0 0 0]               12 [1 1 1 0 0 0 0]
                   13 [1 1 1 1 0 0 0]                2 [1 1 1 1 0 0 0]
                   99 [1 1 1 1 1 0 0]              pad [0 0 0 0 1 0 0]
                   14 [1 1 1 0 0 1 0]              pad [0 0 0 0 0 1 0]
                    2 [1 1 1 0 0 1 1]              pad [0 0 0 0 0 0 1]
    """

    mode: Mode
    pad_token_id: int
    backtrack_id: int | None = None
    attn_form: Literal["float", "bool"] = "float"
    mask_dtype: torch.dtype = torch.float32
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown training mode {self.mode!r}; expected one of {MODES}")
        if not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise ValueError(f"pad_token_id must be a non-negative int, got {self.pad_token_id!r}")
        if self.mode in BACKTRACK_MODES and self.backtrack_id is None:
            raise ValueError(
                f"mode {self.mode!r} trains on ⟨b⟩ but backtrack_id is None: the model's tokenizer has no "
                "backtrack token (add it with policy.add_backtrack_token)"
            )
        if self.attn_form not in ("float", "bool"):
            raise ValueError(f"attn_form must be 'float' or 'bool', got {self.attn_form!r}")
        if not self.mask_dtype.is_floating_point:
            raise ValueError(f"mask_dtype must be a floating dtype, got {self.mask_dtype}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {self.max_length}")

    def sequence(self, example: Mapping[str, Any] | Any) -> tuple[list[int], list[int], int]:
        """``(ids, labels, prompt_len)`` of one example for this mode, unpadded."""
        prompt_len = int(_field(example, "prompt_len"))
        if self.mode == "clean":
            ids = list(_field(example, "clean_ids"))
            keep = [t >= prompt_len for t in range(len(ids))]
        else:
            ids = list(_field(example, "input_ids"))
            if self.mode == "naive":
                keep = [t >= prompt_len for t in range(len(ids))]
            else:
                segments = list(_field(example, "segments"))
                if len(segments) != len(ids):
                    raise ValueError(f"segments has {len(segments)} entries for {len(ids)} input_ids")
                keep = [t >= prompt_len and s not in (_PROMPT, _ERROR) for t, s in enumerate(segments)]
        if not ids or not 0 <= prompt_len <= len(ids):
            raise ValueError(f"prompt_len={prompt_len} is out of range for a sequence of {len(ids)} tokens")
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(
                f"a training sequence has {len(ids)} tokens, more than the model's context of {self.max_length}"
            )
        labels = [tok if k else IGNORE_INDEX for tok, k in zip(ids, keep)]
        return ids, labels, prompt_len

    def __call__(self, examples: Sequence[Mapping[str, Any] | Any]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        return self.pad([self.sequence(ex) for ex in examples])

    def pad(self, rows: Sequence[tuple[list[int], list[int], int]]) -> dict[str, torch.Tensor]:
        """Right-pad ``(ids, labels, prompt_len)`` rows into the batch of this mode's layout (DPO uses it
        directly for its prompt + completion rows)."""
        if self.max_length is not None and max(len(ids) for ids, _, _ in rows) > self.max_length:
            longest = max(len(ids) for ids, _, _ in rows)
            raise ValueError(f"a training sequence has {longest} tokens, more than the model's context of {self.max_length}")
        B, L = len(rows), max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(B, L, dtype=torch.long)
        for i, (ids, lab, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(ids)] = torch.tensor(lab)
        if self.mode != "hard":
            attention_mask = torch.zeros(B, L, dtype=torch.long)
            for i, (ids, _, _) in enumerate(rows):
                attention_mask[i, : len(ids)] = 1
                position_ids[i, : len(ids)] = torch.arange(len(ids))
        else:
            allowed = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)  # pads see only themselves
            for i, (ids, _, prompt_len) in enumerate(rows):
                lay = cache_layout(ids, self.backtrack_id, prompt_len=prompt_len)
                n = len(ids)
                allowed[i, :n, :n] = lay.attention
                position_ids[i, :n] = lay.position_ids
            attention_mask = (allowed.unsqueeze(1) if self.attn_form == "bool"
                              else layout_to_4d_mask(allowed, self.mask_dtype))  # (B, 1, L, L)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "position_ids": position_ids}
