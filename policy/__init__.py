"""Rewind's policy: the backtrack token, its semantics, the models, data, training and decoding."""

from policy.backtrack import BACKTRACK_TOKEN, add_backtrack_token, backtrack_token_id
from policy.layout import (
    BackspaceTrace,
    CacheLayout,
    RunEvent,
    apply_backspaces,
    backspace_trace,
    cache_layout,
    layout_to_4d_mask,
)
from policy.model import Policy, TinyConfig, load_policy, tiny_policy
from policy.tokenizer import char_tokenizer

__all__ = [
    "BACKTRACK_TOKEN",
    "BackspaceTrace",
    "CacheLayout",
    "Policy",
    "RunEvent",
    "TinyConfig",
    "add_backtrack_token",
    "apply_backspaces",
    "backspace_trace",
    "backtrack_token_id",
    "cache_layout",
    "char_tokenizer",
    "layout_to_4d_mask",
    "load_policy",
    "tiny_policy",
]
