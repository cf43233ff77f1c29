"""``RewindBatch``: a batch of rows decoding together over one left-padded KV cache, where each
row deletes tokens from the cache on its own (hard backtracking, DESIGN §1).

The cache is a transformers ``DynamicCache`` whose layers hold ``[B, H, T, D]`` tensors. Row r's
tokens occupy the last ``T - pad[r]`` slots; the first ``pad[r]`` slots are masked out. Deletion
only ever removes the *newest* tokens of a row (the run's ⟨b⟩ and the tokens before them), so a
rewind is a roll of that row by n slots plus ``pad[r] += n``: the removed entries become padding
and leave the attention for good. When every row has padding, the common prefix is cropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

__all__ = ["KVSegment", "RewindBatch", "RowState"]

# one entry per layer: (keys [H, n, D], values [H, n, D])
KVSegment = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass
class RowState:
    """Bookkeeping of one row. ``cached`` mirrors the row's cache slots (alive tokens plus the
    run in progress); the first ``floor`` of them may not be deleted."""

    cached: list[int]
    floor: int
    run: int = 0  # ⟨b⟩ in the run in progress (still in the cache: deletion is deferred)
    n_backtracks: int = 0  # ⟨b⟩ emitted in the whole sequence


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts ``logits_to_keep`` (transformers causal LMs do; checked once per class)."""
    cls = type(model)
    if cls not in _LOGITS_TO_KEEP:
        _LOGITS_TO_KEEP[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
    return _LOGITS_TO_KEEP[cls]


_LOGITS_TO_KEEP: dict[type, bool] = {}


class _last_hidden:
    """Capture the decoder's ``last_hidden_state`` (the final-norm output that ``hidden_states[-1]``
    holds) with a forward hook, so a decode forward need not keep every layer's hidden states
    (``output_hidden_states=True``). Yields None when the model exposes no decoder."""

    def __init__(self, model: torch.nn.Module):
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        self.decoder = decoder if isinstance(decoder, torch.nn.Module) and decoder is not model else None
        self.captured: list[torch.Tensor] = []
        self.handle = None

    def _hook(self, module, args, output) -> None:
        state = getattr(output, "last_hidden_state", None)
        if state is not None:
            self.captured.append(state)

    def __enter__(self) -> list[torch.Tensor] | None:
        if self.decoder is None:
            return None
        self.handle = self.decoder.register_forward_hook(self._hook)
        return self.captured

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.remove()


class RewindBatch:
    """Rows of one batch, their cache, and the deferred-deletion rule.

    ``feed(tokens)`` first closes the runs of rows whose new token is not ⟨b⟩ (physically
    removing the deleted tokens and the run from the cache), then runs the model on the new
    tokens at positions = number of cached tokens of each row. Returns logits ``[B, V]`` (fp32)
    and last-layer hidden states ``[B, H]`` (fp32) of the fed tokens.
    """

    def __init__(self, model: torch.nn.Module, backtrack_id: int | None, *, rewind: bool = True):
        self.model = model
        self.backtrack_id = backtrack_id
        self.rewind = rewind and backtrack_id is not None
        self.cache: DynamicCache | None = None
        self.pad = torch.zeros(0, dtype=torch.long)  # [B] masked leading slots per row
        self.rows: list[RowState] = []

    # ---- construction ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def width(self) -> int:
        """T: slots in the cache."""
        return 0 if self.cache is None else self.cache.get_seq_length()

    def _forward(self, input_ids, attention_mask, position_ids):
        # Only the last position's logits are used: ``logits_to_keep=1`` skips the LM head on the
        # rest of a prefill (profiled: with a 32k vocab, a [16, 112] prefill took 3-6x longer
        # computing the [B, T, V] logits it then threw away; ``model.generate`` does the same).
        keep = {"logits_to_keep": 1} if _takes_logits_to_keep(self.model) else {}
        with _last_hidden(self.model) as captured:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=self.cache, use_cache=True, output_hidden_states=captured is None, **keep)
        self.cache = out.cache
        last = captured[0] if captured else out.hidden_states[-1]  # (B, T, H)
        return out.logits[:, -1].float(), last[:, -1].float()

    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]], floors: Sequence[int] | None = None):
        """Left-pad and run ``prompts``. Returns logits ``[B, V]`` and hidden ``[B, H]`` at each last token."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("prefill needs at least one prompt and no empty prompt")
        T = max(len(p) for p in prompts)
        pad_id = 0
        ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), T), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[r, T - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = DynamicCache()
        self.pad = T - mask.sum(-1)
        floors = floors if floors is not None else [len(p) for p in prompts]
        self.rows = [RowState(cached=list(p), floor=f) for p, f in zip(prompts, floors)]
        dev = self.device
        return self._forward(ids.to(dev), mask.to(dev), pos.to(dev))

    @torch.no_grad()
    def load_segments(self, paths: Sequence[Sequence[KVSegment]], tokens: Sequence[Sequence[int]],
                      floors: Sequence[int]) -> None:
        """Build the cache from stored KV segments: row r is the concatenation of ``paths[r]``
        (its tokens are ``tokens[r]``). No token is run through the model."""
        B = len(paths)
        per_row = [[torch.cat([seg[layer][kv] for seg in path], dim=1) for layer in range(len(path[0]))
                    for kv in (0, 1)] for path in paths]
        lengths = [t[0].shape[1] for t in per_row]
        if [len(t) for t in tokens] != lengths:
            raise ValueError("KV segments and token lists disagree in length")
        T = max(lengths)
        n_layers = len(paths[0][0])
        self.cache = DynamicCache()
        for layer in range(n_layers):
            k0 = per_row[0][2 * layer]
            H, _, D = k0.shape
            keys = k0.new_zeros((B, H, T, D))
            vals = k0.new_zeros((B, H, T, per_row[0][2 * layer + 1].shape[-1]))
            for r in range(B):
                n = lengths[r]
                keys[r, :, T - n:] = per_row[r][2 * layer]
                vals[r, :, T - n:] = per_row[r][2 * layer + 1]
            self.cache.update(keys, vals, layer)
        self.pad = torch.tensor([T - n for n in lengths], dtype=torch.long)
        self.rows = [RowState(cached=list(t), floor=f) for t, f in zip(tokens, floors)]

    # ---- the rewind rule ------------------------------------------------------------------
    def _close_run(self, r: int) -> None:
        """Remove row r's finished run and the tokens it deletes from the cache."""
        row = self.rows[r]
        k = row.run
        deletable = len(row.cached) - k - row.floor
        deleted = max(0, min(k, deletable))
        n = k + deleted
        del row.cached[-n:]
        row.run = 0
        for layer in self.cache.layers:
            layer.keys[r] = layer.keys[r].roll(n, dims=-2)  # the removed slots wrap to the front...
            layer.values[r] = layer.values[r].roll(n, dims=-2)
        self.pad[r] += n  # ...where they are masked out

    def _crop_common_padding(self) -> None:
        m = int(self.pad.min()) if len(self.pad) else 0
        if m > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, m:]
                layer.values = layer.values[:, :, m:]
            self.pad -= m

    def would_close(self, r: int, token: int) -> bool:
        return self.rewind and self.rows[r].run > 0 and token != self.backtrack_id

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor):
        """Feed one token per row (``tokens [B]``). Returns (logits ``[B, V]``, hidden ``[B, H]``)."""
        toks = tokens.tolist()
        closed = False
        for r, t in enumerate(toks):
            if self.would_close(r, t):
                self._close_run(r)
                closed = True
        if closed:
            self._crop_common_padding()
        for r, t in enumerate(toks):
            row = self.rows[r]
            row.cached.append(t)
            if self.rewind and t == self.backtrack_id:
                row.run += 1
                row.n_backtracks += 1
        T = self.width
        dev = self.device
        slots = torch.arange(T + 1)
        mask = (slots[None, :] >= self.pad[:, None]).long()
        pos = (T - self.pad)[:, None]
        return self._forward(tokens.view(-1, 1).to(dev), mask.to(dev), pos.to(dev))

    # ---- batch surgery --------------------------------------------------------------------
    def select(self, keep: Sequence[int]) -> None:
        """Keep only rows ``keep`` (in that order)."""
        idx = torch.tensor(list(keep), dtype=torch.long)
        if self.cache is not None:
            dev_idx = idx.to(self.device)
            for layer in self.cache.layers:
                layer.keys = layer.keys[dev_idx]
                layer.values = layer.values[dev_idx]
        self.pad = self.pad[idx]
        self.rows = [self.rows[i] for i in keep]
        if len(self.rows):
            self._crop_common_padding()

    def repeat(self, counts: Sequence[int]) -> None:
        """Row r becomes ``counts[r]`` consecutive copies of itself."""
        keep = [r for r, c in enumerate(counts) for _ in range(c)]
        idx = torch.tensor(keep, dtype=torch.long)
        dev_idx = idx.to(self.device)
        for layer in self.cache.layers:
            layer.keys = layer.keys[dev_idx]
            layer.values = layer.values[dev_idx]
        self.pad = self.pad[idx]
        self.rows = [RowState(cached=list(self.rows[i].cached), floor=self.rows[i].floor) for i in keep]

    def row_segment(self, r: int, n: int) -> KVSegment:
        """A copy of the KV of row r's newest ``n`` cached tokens: per layer ``([H, n, D], [H, n, D])``."""
        if n == 0:
            return tuple((layer.keys[r, :, :0].clone(), layer.values[r, :, :0].clone()) for layer in self.cache.layers)
        return tuple((layer.keys[r, :, -n:].clone(), layer.values[r, :, -n:].clone()) for layer in self.cache.layers)
