"""The backtrack token: one added special token that acts as a backspace (DESIGN §1)."""

from __future__ import annotations

import torch
from transformers import AddedToken, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BACKTRACK_TOKEN", "add_backtrack_token", "backtrack_token_id"]

BACKTRACK_TOKEN = "<|backtrack|>"


def backtrack_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id of ⟨b⟩ in ``tokenizer``, or ``None`` when it has not been added."""
    vocab = tokenizer.get_vocab()
    return vocab.get(BACKTRACK_TOKEN)


def _check_single_token(tokenizer: PreTrainedTokenizerBase, token_id: int) -> None:
    # The token must survive tokenization as one id, alone and inside text, or training data
    # built by text round trips would silently carry a split backspace.
    for text, expect in ((BACKTRACK_TOKEN, [token_id]), (f"7{BACKTRACK_TOKEN}8", None)):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if expect is not None and ids != expect:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} splits {BACKTRACK_TOKEN!r} into {ids}; "
                "the backtrack token must be a single id"
            )
        if expect is None and ids.count(token_id) != 1:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} does not keep {BACKTRACK_TOKEN!r} whole inside text "
                f"(got {ids})"
            )


@torch.no_grad()
def add_backtrack_token(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> int:
    """Add ⟨b⟩ to ``tokenizer`` (and resize ``model``'s embeddings); return its id.

    The new input and output embedding rows are set to the mean of the existing rows, so the
    token starts as an "average" token instead of a random direction with an outsized logit.
    Idempotent: calling it again changes nothing and returns the same id.
    """
    existing = backtrack_token_id(tokenizer)
    if existing is None:
        tokenizer.add_tokens([AddedToken(BACKTRACK_TOKEN, special=True, normalized=False)], special_tokens=True)
        token_id = backtrack_token_id(tokenizer)
        if token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} refused to add {BACKTRACK_TOKEN!r}")
    else:
        token_id = existing
    _check_single_token(tokenizer, token_id)
    if model is None:
        return token_id
    emb = model.get_input_embeddings()
    old_rows = emb.weight.shape[0]
    if token_id < old_rows and existing is not None:
        return token_id  # already added and already in the embedding: nothing to do
    if token_id >= old_rows:
        model.resize_token_embeddings(token_id + 1, mean_resizing=False)
    emb = model.get_input_embeddings()
    n_ref = min(old_rows, token_id)  # rows that existed before ⟨b⟩
    emb.weight[token_id] = emb.weight[:n_ref].float().mean(0).to(emb.weight.dtype)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != emb.weight.data_ptr():
        out.weight[token_id] = out.weight[:n_ref].float().mean(0).to(out.weight.dtype)
        if getattr(out, "bias", None) is not None:
            out.bias[token_id] = out.bias[:n_ref].float().mean().to(out.bias.dtype)
    return token_id
