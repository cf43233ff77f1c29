"""``Policy``: a causal LM and its tokenizer with ⟨b⟩ added; the built-in tiny policy and the real loader."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from policy.backtrack import BACKTRACK_TOKEN, add_backtrack_token, backtrack_token_id
from policy.tokenizer import char_tokenizer

__all__ = ["POLICY_FORMAT_VERSION", "Policy", "TinyConfig", "load_policy", "tiny_policy"]

POLICY_FORMAT_VERSION = 1
_META = "rewind_policy.json"


@dataclass
class Policy:
    """A causal LM with the backtrack token. ``model`` and ``tokenizer`` are plain transformers objects."""

    model: torch.nn.Module
    tokenizer: object

    def __post_init__(self) -> None:
        bid = backtrack_token_id(self.tokenizer)
        if bid is not None and bid >= self.model.get_input_embeddings().weight.shape[0]:
            raise ValueError(
                f"the tokenizer's {BACKTRACK_TOKEN} id {bid} is outside the model's embedding "
                f"({self.model.get_input_embeddings().weight.shape[0]} rows); call add_backtrack_token(model, tokenizer)"
            )
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                f"tokenizer {type(self.tokenizer).__name__} has no pad token (and no eos token to use as one); "
                "set tokenizer.pad_token before building a Policy"
            )

    @property
    def backtrack_id(self) -> int | None:
        """Id of ⟨b⟩, or ``None`` for a policy loaded with ``add_backtrack=False`` that lacks it."""
        return backtrack_token_id(self.tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int | None:
        cfg = self.model.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    def engine(self, *, share_kv: bool = True, **options):
        """The search engine over this policy (``search.interfaces.PolicyEngine``)."""
        from policy.engine import RewindEngine

        return RewindEngine(self, share_kv=share_kv, **options)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``save_pretrained`` folder (model + tokenizer) and ``rewind_policy.json`` atomically."""
        from policy.atomic import atomic_dir

        path = Path(path)
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            meta = {"format_version": POLICY_FORMAT_VERSION, "backtrack_token": BACKTRACK_TOKEN,
                    "backtrack_id": self.backtrack_id, "hidden_size": self.hidden_size,
                    "vocab_size": len(self.tokenizer)}
            (tmp / _META).write_text(json.dumps(meta, indent=2))
        return path


@dataclass(frozen=True)
class TinyConfig:
    """The built-in tiny policy: a small Llama over the character tokenizer."""

    hidden_size: int = 128  # model width
    num_layers: int = 4  # decoder blocks
    num_heads: int = 4  # query heads
    num_kv_heads: int = 2  # key/value heads (GQA, as in most real models)
    intermediate_size: int = 384  # MLP width
    max_positions: int = 768  # context length in characters
    seed: int = 0  # initialisation seed
    attn_implementation: str = "sdpa"  # "eager" or "sdpa"

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"TinyConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation must be 'eager' or 'sdpa', got {self.attn_implementation!r}")


def tiny_policy(**config) -> Policy:
    """A randomly initialised tiny Llama with the character tokenizer and ⟨b⟩ (no download)."""
    cfg = TinyConfig(**config)
    tok = char_tokenizer()
    add_backtrack_token(None, tok)
    llama = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    llama._attn_implementation = cfg.attn_implementation
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(llama)
    model.eval()
    return Policy(model=model, tokenizer=tok)


def _read_meta(path: Path) -> dict | None:
    meta = path / _META
    if not meta.exists():
        return None
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta} is not valid JSON ({e}); the checkpoint is corrupted") from e
    version = data.get("format_version")
    if version != POLICY_FORMAT_VERSION:
        raise ValueError(
            f"{path} holds a Rewind policy of format version {version!r}; this Rewind reads version "
            f"{POLICY_FORMAT_VERSION}. Re-train it, or load it with the Rewind version that wrote it"
        )
    return data


def load_policy(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    add_backtrack: bool = True,
) -> Policy:
    """Load any causal LM (hub name or local ``save_pretrained`` folder) as a ``Policy``.

    ⟨b⟩ is added if missing (``add_backtrack=True``); a tokenizer with no pad token uses its
    eos token. Unknown names while offline fail with a message that says how to point at a
    local folder instead.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"load_policy needs a model name or a folder path, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise ValueError(
                f"{path} is not a policy checkpoint: expected a folder with config.json "
                "(a save_pretrained folder, e.g. a run's policy/ folder)"
            )
        _read_meta(path)
        source = str(path)
    elif path.is_absolute() or str(name_or_path).startswith((".", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"{path} does not exist (expected a policy folder: a save_pretrained folder, "
                                "e.g. a run's policy/ folder)")  # a path, not a hub name ("org/name")
    else:
        source = str(name_or_path)
    kwargs = {}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as e:  # OSError, a JSON error, a truncated safetensors file (SafetensorError), ...
        if path.exists():
            raise ValueError(f"could not load the policy in {path} (corrupted or half-written?): "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        if not isinstance(e, OSError):
            raise
        raise ValueError(
            f"could not load model {source!r}: it is not a local folder, and the Hugging Face hub is "
            "unreachable or has no such model. Download it where you have network access and pass the "
            "local folder (save_pretrained / hf download), or set HF_HUB_OFFLINE=1 to use the local cache"
        ) from e
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {source!r} has neither a pad nor an eos token; set one before loading")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if add_backtrack:
        add_backtrack_token(model, tokenizer)
    if device is not None:
        model.to(device)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer)
