"""Forwards over a ``KVStore`` (tree attention) and ``RewindBatch``, rows that rewind on their own.

``forward_items`` appends tokens to store handles and runs them in one forward. The model sees
a cache whose keys/values are the store's lanes ``[G, Hkv, W, D]`` and a 4D additive mask
``[G, 1, Q, W]``: query q of lane g attends exactly the slots of its handle's path (the shared
prefix is read in place, never copied per row) plus its own new tokens, causally. Positions are
explicit (the number of path tokens before it), so a rewound slot can be reused at once.
This is the training layout's 4D-mask machinery (DESIGN §1) applied to a cache.

``RewindBatch`` holds one handle per row and applies deferred deletion with
``policy.layout.RewindCounter``: when a row's run of k ⟨b⟩ is closed, its newest ``k + deleted``
tokens are truncated from its handle (their slots are free again), then the new token is fed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from transformers import AttentionInterface

from policy.kv_store import Handle, KVStore
from policy.layout import RewindCounter

__all__ = ["RewindBatch", "forward_items", "new_store", "prefill"]


class _PoolCache:
    """What the model sees as its cache: ``update`` writes the new keys/values into their slots
    and returns the lanes' first ``width`` slots (a view of the pool, not a copy), after the
    ``bases``' slots when some lane reads a cached prefix held in another lane (those are
    gathered once per layer and broadcast to every lane; the mask says which lane reads which)."""

    is_compileable = False

    def __init__(self, store: KVStore, lanes: Sequence[int], slots: torch.Tensor, width: int,
                 bases: Sequence[tuple[int, torch.Tensor | slice]] = ()):
        self.pool, self.slots, self.width, self.bases = store.pool, slots, width, bases  # slots [G, Q]
        self.lanes = torch.tensor(list(lanes), dtype=torch.long, device=slots.device)  # batch row -> lane
        # the batch's lanes: a view when they are one range (the usual case), else a gather
        one_range = list(lanes) == list(range(lanes[0], lanes[0] + len(lanes)))
        self.read = slice(lanes[0], lanes[0] + len(lanes)) if one_range else self.lanes

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.pool.write(layer_idx, self.lanes, self.slots, key_states, value_states)
        out = []
        for t in (self.pool.keys[layer_idx], self.pool.values[layer_idx]):
            lane_part = t[self.read, :, : self.width]
            if self.bases:
                parts = [t[g, :, idx] for g, idx in self.bases]  # [Hkv, P, D] each (a view if one range)
                pre = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
                lane_part = torch.cat([pre.expand(lane_part.shape[0], -1, -1, -1), lane_part], 2)
            out.append(lane_part)
        return out[0], out[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width + sum(_count(idx) for _, idx in self.bases)


def _count(idx: torch.Tensor | slice) -> int:
    return idx.stop - idx.start if isinstance(idx, slice) else len(idx)


def _base_columns(items, row_of: dict[int, int], Q: int, fill: Sequence[int]):
    """The cached prefixes some item reads from another lane: ``[(lane, slots [P])]`` and the
    bool mask ``[G, Q, sum P]`` of which batch row's queries read which prefix (all of a lane's do)."""
    bases: dict[int, Handle] = {}
    for h, _ in items:
        if h.base is not None:
            bases.setdefault(id(h.base), h.base)
    if not bases:
        return (), None
    cols, at, off = [], {}, 0
    for key, b in bases.items():
        slots = b.parent_slots() + b.slots
        idx = torch.tensor(slots, dtype=torch.long)
        if slots == list(range(slots[0], slots[0] + len(slots))):  # one range (a prefix prefilled at once): a view
            cols.append((b.lane, slice(slots[0], slots[0] + len(slots))))
        else:
            cols.append((b.lane, idx))
        at[key] = (off, off + len(idx))
        off += len(idx)
    allowed = torch.zeros((len(row_of), Q, off), dtype=torch.bool)
    for h, _ in items:
        if h.base is not None:
            lo, hi = at[id(h.base)]
            r = row_of[h.lane]
            allowed[r, : fill[r], lo:hi] = True
    return cols, allowed


def _tree_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
               **kwargs):
    """SDPA over a tree forward's cache and bool mask, with grouped-query attention done by SDPA
    itself: transformers' SDPA path copies every K/V head once per query group whenever a mask is
    given (measured ~10% of an MCTS run on the tiny policy)."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("rewind_tree_sdpa", _tree_sdpa)


@contextmanager
def _tree_attention(config):
    """Run a forward of ``forward_items`` with ``_tree_sdpa`` when the model uses SDPA (its 4D
    mask is passed through as is), restoring the model's own choice afterwards."""
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    config._attn_implementation = "rewind_tree_sdpa"
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def new_store(model: torch.nn.Module, *, capacity: int = 64) -> KVStore:
    return KVStore(model.config.num_hidden_layers, next(model.parameters()).device, capacity=capacity)


def _layout(store: KVStore, items, news):
    """The batch's lanes (row r feeds lane ``lanes[r]``; lanes without items sit out), input ids,
    positions, write slots ``[G, Q]``, the bool mask ``[G, Q, P + W]`` (``P``: prefixes read
    from other lanes, ``_base_columns``), each item's last query, and those prefixes.

    Items of one lane take consecutive queries of its row. A query reads its handle's path mask
    (``Handle.path_mask``: the path and all the item's new slots), less the item's later new
    slots (causal within the item); padding queries read only the scratch slot 0."""
    lanes = sorted({h.lane for h, _ in items})  # batch rows: only the lanes this forward feeds
    row_of = {g: r for r, g in enumerate(lanes)}
    G, fill = len(lanes), [0] * len(lanes)
    gq: list[tuple[int, int]] = []
    for h, toks in items:
        r = row_of[h.lane]
        gq.append((r, fill[r]))
        fill[r] += len(toks)
    Q, W, C = max(fill), store.pool.width(), store.pool.capacity
    counts = [len(t) for _, t in items]
    if Q == 1:  # one token per lane (a decode step): no per-token expansion
        flat = [[g for g, _ in gq], [0] * len(items), [t[0] for _, t in items], [h.length - 1 for h, _ in items],
                [new[0] for new in news]]
    else:
        flat = [[g for (g, _), n in zip(gq, counts) for _ in range(n)],
                [q0 + j for (_, q0), n in zip(gq, counts) for j in range(n)],
                [x for _, t in items for x in t],
                [h.length - n + j for (h, _), n in zip(items, counts) for j in range(n)],
                [x for new in news for x in new]]
    g_t, q_t, ids_t, pos_t, slots_t = torch.tensor(flat, dtype=torch.long)
    ids, pos, slots = (torch.zeros((G, Q), dtype=torch.long) for _ in range(3))
    ids[g_t, q_t], pos[g_t, q_t], slots[g_t, q_t] = ids_t, pos_t, slots_t
    allowed = torch.zeros((G, Q, W), dtype=torch.bool)
    allowed[:, :, 0] = True  # padding queries read the scratch slot (never part of a path)
    rows = torch.stack([h.path_mask(C)[:W] for h, _ in items])  # [N, W]
    allowed[g_t, q_t] = rows if len(g_t) == len(items) else rows.repeat_interleave(torch.tensor(counts), 0)
    for (g, q0), new in zip(gq, news):
        if len(new) > 1:  # query j must not read the item's new slots after j
            later = torch.triu_indices(len(new), len(new), 1)
            allowed[g, q0 + later[0], torch.tensor(new, dtype=torch.long)[later[1]]] = False
    last = [(g, q0 + n - 1) for (g, q0), n in zip(gq, counts)]
    bases, base_allowed = _base_columns(items, row_of, Q, fill)
    if base_allowed is not None:
        allowed = torch.cat([base_allowed, allowed], 2)
    return lanes, ids, pos, slots, allowed, last, bases


def forward_items(model: torch.nn.Module, store: KVStore, items: Sequence[tuple[Handle, Sequence[int]]]):
    """Append ``tokens`` to each handle and run them all in one forward.

    Returns logits ``[N, V]`` (fp32) and last-layer hidden states ``[N, H]`` (fp32) at each
    item's last token. Handles of one lane share that lane's queries; other lanes pad."""
    logits, hidden = _forward_items(model, store, items)
    with torch.inference_mode(False):  # normal tensors, even for a caller in inference mode: it may train on them
        return logits.clone(), hidden.clone()


@torch.inference_mode()  # no autograd bookkeeping per op: ~10% of a tiny-policy search
def _forward_items(model: torch.nn.Module, store: KVStore, items: Sequence[tuple[Handle, Sequence[int]]]):
    if not items or any(len(t) == 0 for _, t in items):
        raise ValueError("forward_items needs at least one item and no empty token list")
    news = [store.extend(h, toks) for h, toks in items]
    lanes, ids, pos, slots, allowed, last, bases = _layout(store, items, news)
    dev = store.pool.device
    if getattr(model.config, "_attn_implementation", "eager") == "sdpa":  # SDPA reads a bool mask as is
        mask = allowed[:, None]
    else:  # every other implementation adds the mask to the scores
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    width = allowed.shape[-1] - sum(_count(idx) for _, idx in bases)
    cache = _PoolCache(store, lanes, slots.to(dev), width, [(g, idx if isinstance(idx, slice) else idx.to(dev))
                                                           for g, idx in bases])
    decoder = model.get_decoder()
    with _tree_attention(decoder.config):
        out = decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), cache=cache,
                      use_cache=True)
    g = torch.tensor([a for a, _ in last], device=dev)
    q = torch.tensor([b for _, b in last], device=dev)
    hidden = out.last_hidden_state[g, q]  # (N, H): the decoder's final-norm output
    logits = model.get_output_embeddings()(hidden)
    return logits.float(), hidden.float()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefill(model: torch.nn.Module, store: KVStore, prompts: Sequence[Sequence[int]], *,
            share_min: int | None = 32, owners: Sequence[object] | None = None):
    """Roots for ``prompts`` (one lane each): returns (handles, logits ``[B, V]``, hidden ``[B, H]``,
    tokens run per prompt).

    A prefix of at least ``share_min`` tokens that the store has cached (``match``), or that
    several of these prompts share, is run once: it becomes a cached handle, and each prompt's
    root ``branch``es from it (its own lane, reading the prefix in place) — or starts as a slot
    copy (``copy_prefix``) when only part of a cached handle matches. ``share_min=None`` shares nothing.
    ``owners``: whom each root's bytes count toward (``KVStore.owner_bytes``; default: its lane)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prefill needs at least one prompt and no empty prompt")
    if owners is not None and len(owners) != len(prompts):
        raise ValueError(f"prefill got {len(owners)} owners for {len(prompts)} prompts")
    run = [0] * len(prompts)
    matches = [_match(store, p, share_min) for p in prompts]
    lonely = [i for i, m in enumerate(matches) if m[0] is None]
    while share_min is not None and len(lonely) > 1:  # group prompts by a long common prefix
        first = prompts[lonely[0]]
        group = [lonely[0]] + [i for i in lonely[1:] if _common_prefix(first, prompts[i]) >= share_min]
        lonely = [i for i in lonely if i not in group]
        if len(group) < 2:
            continue
        n = min(min(_common_prefix(first, prompts[i]) for i in group), min(len(prompts[i]) for i in group) - 1)
        if n >= share_min:
            shared = store.insert(None, cached=True)
            forward_items(model, store, [(shared, list(first[:n]))])
            run[group[0]] += n
            for i in group:
                matches[i] = (shared, n)
    roots, items = [], []
    for p, (h, n), owner in zip(prompts, matches, owners or [None] * len(prompts)):
        if h is not None and n == h.length:
            root = store.branch(h, owner=owner)  # its own lane, reading the shared prefix in place (no copy)
        else:
            root = store.copy_prefix(h, n, owner=owner) if h is not None else store.insert(None, owner=owner)
        roots.append(root)
        items.append((root, list(p[n:])))
    logits, hidden = forward_items(model, store, items)
    for h in {id(h): h for h, _ in matches if h is not None and not h.released}.values():
        store.release(h)  # a prefix made here: it stays cached (matchable) until evicted
    return roots, logits, hidden, [r + len(t) for r, (_, t) in zip(run, items)]


def _match(store: KVStore, prompt: Sequence[int], share_min: int | None) -> tuple[Handle | None, int]:
    if share_min is None or not store.cached:
        return None, 0
    h, n = store.match(prompt)
    n = min(n, len(prompt) - 1)  # the last token must run: its logits are not cached
    return (h, n) if n >= share_min else (None, 0)


class RewindBatch:
    """Rows (one store handle each) fed one token per step, each applying its own deferred deletion.

    ``floor``: a row's handle holds only tokens past its floor (a prompt, or a parent node's
    path, lives in its ancestors), so a rewind can never reach below it."""

    def __init__(self, model: torch.nn.Module, store: KVStore, rows: Sequence[Handle], backtrack_id: int | None,
                 *, rewind: bool = True):
        self.model, self.store = model, store
        self.backtrack_id = backtrack_id
        self.rewind = rewind and backtrack_id is not None
        self.rows = list(rows)
        self.sims = [RewindCounter() for _ in self.rows]

    @torch.no_grad()
    def feed(self, tokens: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Feed one token per row. Returns logits ``[B, V]``, hidden ``[B, H]`` and, per row, how
        many alive tokens the closing of its run deleted (0 when none closed)."""
        deleted = [0] * len(self.rows)
        for r, t in enumerate(tokens):
            if self.rewind:
                closed = self.sims[r].feed(t == self.backtrack_id)
                if closed:
                    self.store.truncate(self.rows[r], closed[0] + closed[1])
                    deleted[r] = closed[1]
        logits, hidden = forward_items(self.model, self.store, [(h, [t]) for h, t in zip(self.rows, tokens)])
        return logits, hidden, deleted

    def select(self, keep: Sequence[int]) -> None:
        """Keep only rows ``keep`` (in that order); the caller owns the handles it drops."""
        self.rows = [self.rows[i] for i in keep]
        self.sims = [self.sims[i] for i in keep]
