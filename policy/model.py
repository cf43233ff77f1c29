"""``Policy``: a causal LM and its tokenizer with ⟨b⟩ added; the built-in tiny policy and the real loader."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from policy.atomic import atomic_dir
from policy.backtrack import BACKTRACK_TOKEN, add_backtrack_token, backtrack_token_id
from policy.engine import RewindEngine
from policy.locate import Located, locate
from policy.prompts import PLAIN, PromptFormat, encode_text, protect_special_tokens
from policy.tokenizer import char_tokenizer

__all__ = ["POLICY_FORMAT_VERSION", "Policy", "TinyConfig", "load_policy", "merge_lora", "tiny_policy"]

POLICY_FORMAT_VERSION = 1
_META = "rewind_policy.json"


@dataclass
class Policy:
    """A causal LM with the backtrack token. ``model`` and ``tokenizer`` are plain transformers objects
    (``model`` may be a PEFT model while LoRA-training). ``prompt_format`` is how questions become
    prompts, for training, decoding, search and evaluation alike; it rides on the tokenizer
    (``tokenizer.rewind_prompt_format``) so that every data builder that is handed the tokenizer
    encodes the same prompt. ``origin`` records where the weights came from (an adapter's base)."""

    model: torch.nn.Module
    tokenizer: object
    prompt_format: PromptFormat = PLAIN
    origin: Located | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt_format, PromptFormat):
            raise ValueError(f"prompt_format must be a policy.prompts.PromptFormat, got {type(self.prompt_format).__name__}")
        self.tokenizer.rewind_prompt_format = self.prompt_format
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

    @property
    def is_adapter(self) -> bool:
        """Whether ``model`` is a PEFT model (LoRA adapters on a frozen base)."""
        return hasattr(self.model, "peft_config")

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` as plain text (special-token text is not parsed): for any user text."""
        return encode_text(self.tokenizer, text)

    def prompt_ids(self, question: str) -> list[int]:
        """The prompt ids of ``question`` under ``prompt_format``."""
        return self.prompt_format.encode(question, self.tokenizer)

    def engine(self, *, share_kv: bool = True, **options):
        """The search engine over this policy (``search.interfaces.PolicyEngine``)."""
        return RewindEngine(self, share_kv=share_kv, **options)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``save_pretrained`` folder (model + tokenizer) and ``rewind_policy.json`` atomically.

        A PEFT model writes its adapter folder; ``rewind_policy.json`` then names the base it was
        trained on (``adapter_base``), so ``load_policy(path)`` finds it again."""
        path = Path(path)
        meta = {"format_version": POLICY_FORMAT_VERSION, "backtrack_token": BACKTRACK_TOKEN,
                "backtrack_id": self.backtrack_id, "hidden_size": self.hidden_size,
                "vocab_size": len(self.tokenizer), "prompt_format": self.prompt_format.to_dict()}
        if self.is_adapter:
            base = self.origin.base if self.origin is not None and self.origin.kind == "adapter" else self.origin
            if base is None:
                raise ValueError("this LoRA policy does not know its base model (Policy.origin is None); "
                                 "load the base with load_policy so the adapter can name it")
            meta["adapter_base"] = {"source": str(Path(base.source).resolve()) if Path(base.source).exists()
                                    else base.source, "gguf_file": base.gguf_file}
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
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
    protect_special_tokens(tok)
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


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    value = getattr(torch, names.get(dtype, dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (float32/fp32, bfloat16/bf16, float16/fp16 or 'auto')")
    return value


def _dequantized(model: torch.nn.Module, dtype: torch.dtype | str | None) -> torch.nn.Module:
    """A plain model with the weights of a GGUF-loaded one: transformers marks GGUF models as
    quantized (``save_pretrained`` and the ``Trainer`` refuse them) although their tensors are
    already dequantized, so the model is rebuilt from its config and state dict."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no random initialisation: every tensor comes from ``model``
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict(), assign=True)
    source = dict(model.named_buffers())
    for name, buf in list(plain.named_buffers()):  # non-persistent buffers (rotary inv_freq) are not in the state dict
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            plain.get_submodule(owner)._buffers[attr] = source[name]
    plain.tie_weights()
    if isinstance(dtype, torch.dtype):
        plain.to(dtype)
    return plain


def _load_model(loc: Located, kwargs: dict, hub_kwargs: dict):
    """(model, tokenizer) of a hub name, folder or GGUF file, as transformers loads them."""
    if loc.kind == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(loc.source, gguf_file=loc.gguf_file)
        load_kw = {k: v for k, v in kwargs.items() if k != "dtype"}
        model = AutoModelForCausalLM.from_pretrained(loc.source, gguf_file=loc.gguf_file, **load_kw)
        return _dequantized(model, kwargs.get("dtype")), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(loc.source, **hub_kwargs)
    model = AutoModelForCausalLM.from_pretrained(loc.source, **kwargs, **hub_kwargs)
    return model, tokenizer


def _load_error(loc: Located, e: Exception) -> Exception:
    if loc.kind != "hub":
        return ValueError(f"could not load the policy in {loc.source} (corrupted or half-written?): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(e, OSError):
        return e
    return ValueError(
        f"could not load model {loc.source!r}: it is not a local folder, and the Hugging Face hub is "
        "unreachable or has no such model. Download it where you have network access and pass the "
        "local folder (save_pretrained / hf download), or set HF_HUB_OFFLINE=1 to use the local cache"
    )


def load_policy(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    add_backtrack: bool = True,
    revision: str | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    merge_adapter: bool = True,
    prompt_format: PromptFormat | None = None,
) -> Policy:
    """Load any causal LM as a ``Policy``: a hub name, a ``save_pretrained`` / policy folder, a run
    folder, a ``.gguf`` file (or ``gguf_file=`` inside ``name_or_path``), or a LoRA adapter folder
    (its base is loaded, the adapter applied and, with ``merge_adapter``, merged).

    ``dtype`` is the weights' dtype (``None``: the checkpoint's; training passes ``float32`` master
    weights). ⟨b⟩ is added if missing (``add_backtrack=True``); a tokenizer with no pad token uses
    its eos token. ``prompt_format`` overrides the one saved with the policy.
    """
    loc = locate(name_or_path, gguf_file=gguf_file)
    kwargs: dict = {}
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    hub_kwargs = {"revision": revision} if revision else {}
    if trust_remote_code:
        hub_kwargs["trust_remote_code"] = True
    if loc.kind == "adapter":
        return _load_adapter(loc, kwargs, hub_kwargs, device=device, merge=merge_adapter,
                             prompt_format=prompt_format)
    meta = _read_meta(Path(loc.source)) if loc.kind == "folder" else None
    try:
        model, tokenizer = _load_model(loc, kwargs, hub_kwargs)
    except Exception as e:  # OSError, a JSON error, a truncated safetensors file (SafetensorError), ...
        raise _load_error(loc, e) from e
    fmt = prompt_format or (PromptFormat.from_dict(meta["prompt_format"]) if meta and meta.get("prompt_format")
                            else PLAIN)
    return _finish(model, tokenizer, loc, add_backtrack=add_backtrack, device=device, prompt_format=fmt)


def _finish(model, tokenizer, loc: Located, *, add_backtrack: bool, device, prompt_format: PromptFormat) -> Policy:
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {loc.source!r} has neither a pad nor an eos token; set one before loading")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.split_special_tokens = False  # ⟨b⟩'s own single-token check parses it as a special token
    if add_backtrack:
        add_backtrack_token(model, tokenizer)
    protect_special_tokens(tokenizer)
    if device is not None:
        model.to(device)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, prompt_format=prompt_format, origin=loc)


def _load_adapter(loc: Located, kwargs: dict, hub_kwargs: dict, *, device, merge: bool,
                  prompt_format: PromptFormat | None) -> Policy:
    """Base (resized to the adapter's tokenizer, which holds ⟨b⟩) + the PEFT adapter."""
    from peft import PeftModel

    folder = Path(loc.source)
    meta = _read_meta(folder) or {}
    try:
        model, _ = _load_model(loc.base, kwargs, hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:
        raise ValueError(f"could not load the base {loc.base.source} of the adapter in {folder}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    tokenizer.split_special_tokens = False  # ⟨b⟩'s single-token check parses it as a special token
    add_backtrack_token(model, tokenizer)  # the base's ⟨b⟩ row as training began: the mean row
    model = PeftModel.from_pretrained(model, str(folder))
    if merge:
        model = model.merge_and_unload().requires_grad_(True)  # PEFT froze the base; a merged model trains whole
        loc = loc.base  # a merged policy is a plain model; saving it writes a full folder
    fmt = prompt_format or (PromptFormat.from_dict(meta["prompt_format"]) if meta.get("prompt_format") else PLAIN)
    return _finish(model, tokenizer, loc, add_backtrack=True, device=device, prompt_format=fmt)


def merge_lora(adapter: str | os.PathLike, out: str | os.PathLike, *, dtype: torch.dtype | str | None = None) -> Path:
    """Merge a LoRA adapter folder (or a run folder holding one) into its base; write a full policy folder."""
    policy = load_policy(adapter, dtype=dtype, merge_adapter=True)
    if policy.is_adapter:
        raise ValueError(f"{adapter} did not merge into a plain model")
    return policy.save(out)
