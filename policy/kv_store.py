"""``KVStore``: every KV entry of decoding and search, in one preallocated slot pool, with an
operation-level API (insert, match, fork, lock/unlock, release, evict, bytes/peak).

Layout. The pool holds, per layer, keys and values ``[G, Hkv, C, D]``: ``G`` *lanes* of ``C``
token *slots*. A lane holds one tree of sequences (one problem, or one prompt of ``generate``);
slot 0 of each lane is scratch for padding queries and never allocated. A ``Handle`` owns the
slots of its own tokens; the tokens of its path are its ancestors' slots plus its own, in any
slot order (keys are stored after RoPE, and attention reads slots through a mask, so order does
not matter). A child extends its parent by *reference*: forking copies no KV, and a rewind is
giving back a handle's newest slots (``truncate``). Attention of a row reads its path's slots
through a 4D mask (tree attention over the lane; ``policy/decoding.py``).

Why lanes and not one flat pool: a dense attention reads every slot of its batch row, so rows
of one problem should not pay for the slots of the others (on CPU, 8 problems in one flat pool
cost ~4x the attention FLOPs of 8 lanes). A prompt prefix shared across problems is prefilled
once into a cached handle of its own lane; each problem's root ``branch``es from it: a new lane
whose queries read the prefix's slots *in place* (the forward gathers them once per layer for
every lane that reads them; ``policy/decoding.py``), so the prefix is held once, not once per
problem. A cached prefix that only partly matches a prompt is copied (``copy_prefix``).

Per-owner bytes. Every handle counts its slots toward an *owner* (one problem of a search): a
root's owner is its lane unless given, and children inherit it, so a problem whose tree lives
in one lane — the shared prefix it reads in place included — is metered by ``owner_bytes`` /
``owner_peak_bytes`` exactly as the store counts ``bytes`` / ``peak_bytes`` for all of them.

Ownership. ``refs`` counts a handle's live children plus its locks. A handle is freed (its slots
go back to the lane) once it is released and ``refs == 0``; freeing walks up to parents that were
waiting on it. A *cached* handle (``insert(..., cached=True)``: a shared prompt prefix) stays
matchable after its release until ``evict`` frees it, least recently used first.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Handle", "KVPool", "KVStore"]


@dataclass(eq=False)
class Handle:
    """One sequence segment in the store: its tokens and the slots holding their KV."""

    parent: Handle | None
    lane: int
    tokens: list[int]  # this segment's tokens, in order
    slots: list[int]  # slot of each token in ``lane`` (len == len(tokens))
    offset: int  # tokens on the path before this segment (its first token's position)
    refs: int = 0  # live children + locks
    released: bool = False
    freed: bool = False
    cached: bool = False  # matchable by ``match`` (a shared prompt prefix)
    last_used: int = 0
    owner: object = None  # whose bytes its slots count in (``KVStore.owner_bytes``); a root's lane by default
    base: Handle | None = None  # a cached prefix in another lane that its path starts with (read in place)
    _mask: torch.Tensor | None = field(default=None, repr=False)  # [>= C] bool: the slots of its path

    @property
    def length(self) -> int:
        """Tokens on the path, this segment's included."""
        return self.offset + len(self.tokens)

    def path_tokens(self) -> list[int]:
        out: list[int] = []
        for h in self.path():
            out.extend(h.tokens)
        return out

    def path(self) -> list[Handle]:
        out, h = [], self
        while h is not None:
            out.append(h)
            h = h.parent
        return out[::-1]

    def parent_slots(self) -> list[int]:
        """Slots, in this handle's lane, of the path before this segment (a ``base`` read from
        another lane is not among them)."""
        p = self.parent
        return [] if p is None or p.lane != self.lane else p.parent_slots() + p.slots

    def path_mask(self, capacity: int) -> torch.Tensor:
        """Bool ``[capacity]``: which slots of the lane hold this handle's path (its own included).

        Kept up to date as the handle grows and shrinks (``KVStore.extend`` / ``truncate``) and
        built from the parent's at first use, so a decode step reads a row's mask without
        walking its path; an ancestor's mask never changes while it has children."""
        with torch.inference_mode(False):  # a normal tensor: truncate/extend update it outside forwards too
            return self._path_mask(capacity)

    def _path_mask(self, capacity: int) -> torch.Tensor:
        m = self._mask
        if m is None:
            same_lane = self.parent is not None and self.parent.lane == self.lane
            m = self.parent.path_mask(capacity).clone() if same_lane else torch.zeros(capacity, dtype=torch.bool)
            m[self.slots] = True
            self._mask = m
        elif m.shape[0] < capacity:  # the pool grew
            m = self._mask = torch.cat([m, m.new_zeros(capacity - m.shape[0])])
        return m[:capacity]

    @torch.inference_mode(False)
    def _mark(self, slots: Sequence[int], on: bool) -> None:
        if self._mask is not None and slots:
            need = max(slots) + 1
            if self._mask.shape[0] < need:
                self._mask = torch.cat([self._mask, self._mask.new_zeros(need - self._mask.shape[0])])
            self._mask[slots[0] if len(slots) == 1 else list(slots)] = on


class KVPool:
    """The slot buffers: per layer ``keys``/``values`` ``[G, Hkv, C, D]``, allocated at the first write."""

    def __init__(self, n_layers: int, device: torch.device, *, capacity: int = 64):
        self.n_layers, self.device = n_layers, device
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.occupied = torch.zeros((0, capacity), dtype=torch.bool)  # [G, C] (CPU bookkeeping)
        self.occupied_lanes: list[int] = []  # handles alive per lane (a lane with none is reusable)
        self._free: list[list[int]] = []  # per lane: a heap of its free slots (the lowest is taken first)
        self._high = 0  # the highest slot ever handed out (the attention width is 1 + it)
        self.bytes_per_slot = 0  # known after the first write

    @property
    def lanes(self) -> int:
        return self.occupied.shape[0]

    @property
    def capacity(self) -> int:
        return self.occupied.shape[1]

    def _resize(self, lanes: int, capacity: int) -> None:
        with torch.inference_mode(False):  # bookkeeping stays a normal tensor (updated outside forwards)
            occ = torch.zeros((lanes, capacity), dtype=torch.bool)
        occ[: self.lanes, : self.capacity] = self.occupied
        occ[:, 0] = True  # the scratch slot
        for heap in self._free:  # the new slots of the lanes there were
            heap.extend(range(self.capacity, capacity))  # all above the old ones: still a heap
        self._free.extend(list(range(1, capacity)) for _ in range(self.lanes, lanes))
        self.occupied = occ
        self._resize_buffers(lanes, capacity)

    @torch.inference_mode()  # KV buffers are inference tensors: every op on them runs in inference mode
    def _resize_buffers(self, lanes: int, capacity: int) -> None:
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is None:
                    continue
                new = t.new_zeros((lanes, t.shape[1], capacity, t.shape[3]))
                new[: t.shape[0], :, : t.shape[2]] = t
                store[i] = new

    def new_lane(self) -> int:
        for g, n in enumerate(self.occupied_lanes):
            if n == 0:
                return g
        self._resize(self.lanes + 1, self.capacity)
        self.occupied_lanes.append(0)
        return self.lanes - 1

    def alloc(self, lane: int, n: int) -> list[int]:
        """``n`` free slots of ``lane``, lowest first (keeps the attention width small)."""
        heap = self._free[lane]
        if len(heap) < n:
            self._resize(self.lanes, max(self.capacity + n - len(heap), self.capacity + self.capacity // 2))
            heap = self._free[lane]
        slots = [heapq.heappop(heap) for _ in range(n)]
        if slots and slots[-1] > self._high:
            self._high = slots[-1]
        self.occupied[lane, slots[0] if n == 1 else slots] = True
        return slots

    def free(self, lane: int, slots: Sequence[int]) -> None:
        if slots:
            self.occupied[lane, list(slots)] = False
            for s in slots:
                heapq.heappush(self._free[lane], s)

    def width(self) -> int:
        """Slots an attention must read: 1 + the highest slot any lane has used (slots are taken
        lowest first, so this is the most a lane has held at once, plus the scratch slot)."""
        return 1 + self._high

    def write(self, layer: int, lanes: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``k``/``v`` ``[G, Hkv, Q, D]`` of queries at ``slots [G, Q]`` of lanes ``lanes [G]``."""
        if self.keys[layer] is None:
            shape = (self.lanes, k.shape[1], self.capacity, k.shape[3])
            self.keys[layer], self.values[layer] = k.new_zeros(shape), v.new_zeros(shape)
            if layer == 0:
                self.bytes_per_slot = self.n_layers * k.shape[1] * (k.shape[3] + v.shape[3]) * k.element_size()
        self.keys[layer][lanes[:, None], :, slots] = k.transpose(1, 2)  # (G, Q, Hkv, D)
        self.values[layer][lanes[:, None], :, slots] = v.transpose(1, 2)

    @torch.inference_mode()
    def copy(self, src_lane: int, src: Sequence[int], dst_lane: int, dst: Sequence[int]) -> None:
        s, d = torch.tensor(list(src), device=self.device), torch.tensor(list(dst), device=self.device)
        for store in (self.keys, self.values):
            for t in store:
                if t is not None:
                    t[dst_lane, :, d] = t[src_lane, :, s]


class KVStore:
    """Handles over a ``KVPool``; the only owner of KV memory in decoding and search."""

    def __init__(self, n_layers: int, device: torch.device, *, capacity: int = 64):
        self.pool = KVPool(n_layers, device, capacity=capacity)
        self.live_slots = 0  # allocated slots, scratch excluded
        self.peak_slots = 0
        self.cached: list[Handle] = []  # matchable handles
        self._clock = itertools.count(1)
        self._owner_live: dict[object, int] = {}  # owner -> live slots
        self._owner_peak: dict[object, int] = {}  # owner -> most live slots at once

    # ---- memory --------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        """Bytes of every live slot (copies of a shared prefix included)."""
        return self.live_slots * self.pool.bytes_per_slot

    @property
    def peak_bytes(self) -> int:
        return self.peak_slots * self.pool.bytes_per_slot

    @property
    def capacity_bytes(self) -> int:
        """Bytes the pool has allocated (free slots and scratch included)."""
        return self.pool.lanes * self.pool.capacity * self.pool.bytes_per_slot

    def handle_bytes(self, h: Handle) -> int:
        return len(h.slots) * self.pool.bytes_per_slot

    def owner_bytes(self, owner: object) -> int:
        """Bytes of the live slots that count toward ``owner`` (0 for an owner never seen)."""
        return self._owner_live.get(owner, 0) * self.pool.bytes_per_slot

    def owner_peak_bytes(self, owner: object) -> int:
        """The most bytes ``owner`` held at once since it was first used (its lane taken afresh)."""
        return self._owner_peak.get(owner, 0) * self.pool.bytes_per_slot

    def owner_peaks(self) -> dict[object, int]:
        """``owner_peak_bytes`` of every owner that ever held a slot."""
        return {o: n * self.pool.bytes_per_slot for o, n in self._owner_peak.items() if n}

    def _alloc(self, h: Handle, n: int) -> list[int]:
        slots = self.pool.alloc(h.lane, n)
        self.live_slots += n
        self.peak_slots = max(self.peak_slots, self.live_slots)
        live = self._owner_live[h.owner] = self._owner_live.get(h.owner, 0) + n
        self._owner_peak[h.owner] = max(self._owner_peak.get(h.owner, 0), live)
        return slots

    def _give_back(self, h: Handle, slots: Sequence[int]) -> None:
        self.pool.free(h.lane, slots)
        self.live_slots -= len(slots)
        if slots:
            self._owner_live[h.owner] -= len(slots)

    # ---- building ------------------------------------------------------------------------
    def insert(self, parent: Handle | None, *, lane: int | None = None, cached: bool = False,
               owner: object = None) -> Handle:
        """A new empty handle under ``parent`` (in its lane, counted to its owner) or a root in
        ``lane`` (a new lane when None) counted to ``owner`` (the lane when None). Its tokens
        arrive with ``extend``; the caller holds it until ``release``."""
        if parent is not None:
            self._check_live(parent, "insert under")
            if lane is not None and lane != parent.lane:
                raise ValueError(f"a child lives in its parent's lane {parent.lane}, not {lane}")
            if owner is not None and owner != parent.owner:
                raise ValueError(f"a child counts toward its parent's owner {parent.owner!r}, not {owner!r}")
            lane, owner = parent.lane, parent.owner
            parent.refs += 1
        elif lane is None:
            lane = self.pool.new_lane()
            if owner is None:  # a lane taken afresh: its metering starts again
                self._owner_peak[lane] = self._owner_live.get(lane, 0)
        owner = lane if owner is None else owner
        h = Handle(parent=parent, lane=lane, tokens=[], slots=[], offset=0 if parent is None else parent.length,
                   cached=cached, last_used=next(self._clock), owner=owner,
                   base=None if parent is None else parent.base)
        self.pool.occupied_lanes[lane] += 1
        if cached:
            self.cached.append(h)
        return h

    def fork(self, handle: Handle, n: int) -> list[Handle]:
        """``n`` empty children of ``handle`` (rows that extend its path; no KV is copied)."""
        if n < 1:
            raise ValueError(f"fork needs n >= 1, got {n}")
        return [self.insert(handle) for _ in range(n)]

    def branch(self, prefix: Handle, *, owner: object = None) -> Handle:
        """A new empty root in a new lane whose path continues ``prefix`` — a cached prompt prefix
        that its lane's queries read *in place* from ``prefix``'s lane (no copy, no forward).
        Counted toward ``owner`` (its own lane when None); ``prefix`` stays counted where it is,
        once for all its branches."""
        self._check_live(prefix, "branch from", allow_released=prefix.cached)
        if prefix.base is not None:
            raise ValueError("cannot branch from a handle that itself reads a prefix from another lane")
        lane = self.pool.new_lane()
        if owner is None:  # a lane taken afresh: its metering starts again
            self._owner_peak[lane] = self._owner_live.get(lane, 0)
        prefix.refs += 1
        prefix.last_used = next(self._clock)
        h = Handle(parent=prefix, lane=lane, tokens=[], slots=[], offset=prefix.length, last_used=next(self._clock),
                   owner=lane if owner is None else owner, base=prefix)
        self.pool.occupied_lanes[lane] += 1
        return h

    def extend(self, h: Handle, tokens: Sequence[int]) -> list[int]:
        """Append ``tokens`` to ``h``; returns their new slots (the caller's forward writes them)."""
        self._check_live(h, "extend")
        if h.refs:
            raise ValueError("cannot extend a handle that has children or locks: their paths end where it ends now")
        slots = self._alloc(h, len(tokens))
        h.tokens.extend(int(t) for t in tokens)
        h.slots.extend(slots)
        h._mark(slots, True)
        return slots

    def truncate(self, h: Handle, n: int) -> None:
        """Drop ``h``'s newest ``n`` tokens (a rewind): their slots go back to the lane."""
        self._check_live(h, "truncate")
        if not 0 <= n <= len(h.tokens):
            raise ValueError(f"cannot drop {n} tokens of a segment of {len(h.tokens)}")
        if h.refs and n:
            raise ValueError("cannot truncate a handle that has children or locks: they read its slots")
        if n:
            self._give_back(h, h.slots[-n:])
            h._mark(h.slots[-n:], False)
            del h.tokens[-n:], h.slots[-n:]

    def copy_prefix(self, src: Handle, n: int, *, lane: int | None = None, owner: object = None) -> Handle:
        """A new root holding the first ``n`` path tokens of ``src``, their KV copied slot to slot
        into ``lane`` (a new lane when None) and counted to ``owner`` (as ``insert``): a cached
        prefix shared without a forward."""
        self._check_live(src, "copy", allow_released=src.cached)
        if src.base is not None:
            raise ValueError("copy_prefix copies within one lane's path; this handle reads a prefix from another lane")
        if not 0 < n <= src.length:
            raise ValueError(f"copy_prefix needs 0 < n <= {src.length}, got {n}")
        src_slots = (src.parent_slots() + src.slots)[:n]
        h = self.insert(None, lane=lane, owner=owner)
        h.tokens = src.path_tokens()[:n]
        h.slots = self._alloc(h, n)
        self.pool.copy(src.lane, src_slots, h.lane, h.slots)
        src.last_used = next(self._clock)
        return h

    # ---- lookup --------------------------------------------------------------------------
    def match(self, tokens: Sequence[int]) -> tuple[Handle | None, int]:
        """The cached handle sharing the longest prefix with ``tokens``, and that prefix's length
        (``(None, 0)`` when none shares a token)."""
        if len(tokens) == 0:
            raise ValueError("match needs at least one token (an empty prefix matches everything)")
        best, best_n = None, 0
        for h in self.cached:
            path = h.path_tokens()
            n = 0
            for a, b in zip(path, tokens):
                if a != b:
                    break
                n += 1
            if n > best_n:
                best, best_n = h, n
        return best, best_n

    # ---- ownership -----------------------------------------------------------------------
    def lock(self, h: Handle) -> None:
        self._check_live(h, "lock", allow_released=h.cached)
        h.refs += 1

    def unlock(self, h: Handle) -> None:
        if h.refs <= 0:
            raise ValueError("unlock of a handle that holds no lock")
        h.refs -= 1
        self._maybe_free(h)

    def release(self, h: Handle) -> None:
        """The owner will use ``h`` no more. Its slots are freed once no child or lock needs them
        (a cached handle stays matchable until evicted). Releasing twice is an error."""
        if h.released:
            raise ValueError("this KV handle was already released")
        h.released = True
        self._maybe_free(h)

    def _maybe_free(self, h: Handle | None) -> None:
        while h is not None and h.released and h.refs == 0 and not h.freed and not h.cached:
            self._free(h)
            h = h.parent
            if h is not None:
                h.refs -= 1

    def _free(self, h: Handle) -> None:
        self._give_back(h, h.slots)
        h.slots, h.freed = [], True
        self.pool.occupied_lanes[h.lane] -= 1

    def evictable_bytes(self) -> int:
        return sum(self.handle_bytes(h) for h in self.cached if h.released and h.refs == 0)

    def evict(self, nbytes: int) -> int:
        """Free released, unlocked cached handles, least recently used first, until ``nbytes``
        are freed; returns the bytes freed. Asking for more than is evictable is an error (the
        rest is locked or in use)."""
        if nbytes < 0:
            raise ValueError(f"evict needs nbytes >= 0, got {nbytes}")
        can = self.evictable_bytes()
        if nbytes > can:
            raise ValueError(f"cannot evict {nbytes} bytes: {can} are evictable, {self.bytes - can} are locked or in use")
        freed = 0
        for h in sorted((h for h in self.cached if h.released and h.refs == 0), key=lambda h: h.last_used):
            if freed >= nbytes:
                break
            freed += self.handle_bytes(h)
            self.cached.remove(h)
            h.cached = False
            self._maybe_free(h)
        return freed

    def _check_live(self, h: Handle, what: str, *, allow_released: bool = False) -> None:
        if h.freed:
            raise ValueError(f"cannot {what} a KV handle whose memory was freed")
        if h.released and not allow_released:
            raise ValueError(f"cannot {what} a released KV handle")
