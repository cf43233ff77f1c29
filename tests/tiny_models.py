"""Tiny randomly initialised causal LMs of three families, built from configs (no download)."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 64
FAMILIES = ("llama", "qwen2", "gpt2")


def tiny_lm(family: str, attn: str = "sdpa", seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
        cls = LlamaForCausalLM
    elif family == "qwen2":
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
        cls = Qwen2ForCausalLM
    elif family == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256)
        cls = GPT2LMHeadModel
    else:
        raise ValueError(family)
    cfg._attn_implementation = attn
    model = cls(cfg).eval()
    return model
