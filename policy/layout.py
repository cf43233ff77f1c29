"""The backspace semantics core: effective sequences and the training layout of hard backtracking.

One simulation of the inference KV cache (``_simulate``) defines both the effective output and
the attention layout, so the collator, DPO and the tests cannot disagree with decoding (DESIGN §1).

Deletion is deferred: while a run of ⟨b⟩ lasts, the tokens it deletes and the ⟨b⟩ themselves stay
in the cache, so each ⟨b⟩ is predicted from a state that still sees the error. When the first
token after the run is fed, the k deleted tokens and the k ⟨b⟩ leave the cache and that token
takes the position of the first deleted token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "BackspaceTrace",
    "CacheLayout",
    "RewindCounter",
    "RunEvent",
    "apply_backspaces",
    "backspace_trace",
    "cache_layout",
    "layout_to_4d_mask",
]


@dataclass(frozen=True)
class RunEvent:
    """One ⟨b⟩-run: ``start`` is the raw index of its first ⟨b⟩, ``length`` its ⟨b⟩ count,
    ``deleted`` how many tokens it removed (``length - deleted`` are surplus no-ops at the prompt)."""

    start: int
    length: int
    deleted: int

    @property
    def surplus(self) -> int:
        return self.length - self.deleted


@dataclass(frozen=True)
class BackspaceTrace:
    """Result of applying the backspaces of a raw sequence.

    ``alive``: raw indices of the effective sequence (prompt included), in order.
    ``events``: the runs, in order. ``surplus``: total no-op ⟨b⟩ (runs that hit the prompt).
    """

    alive: tuple[int, ...]
    events: tuple[RunEvent, ...]

    @property
    def surplus(self) -> int:
        return sum(e.surplus for e in self.events)


@dataclass(frozen=True)
class CacheLayout:
    """The attention layout that reproduces the inference cache.

    ``attention``: bool ``[L, L]``, ``attention[t, s]`` is True when token s is in the cache
    (or is t itself) at the moment token t is fed. ``position_ids``: long ``[L]``, the number
    of cached tokens before t.
    """

    attention: torch.Tensor  # [L, L] bool
    position_ids: torch.Tensor  # [L] long


def _validate(ids: Sequence[int], backtrack_id: int, prompt_len: int, vocab_size: int | None = None) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got a tensor of shape {tuple(ids.shape)}")
        ids = ids.tolist()
    ids = list(ids)
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ValueError("ids must be integers")
    if any(t < 0 for t in ids):
        raise ValueError(f"ids must be non-negative token ids, got {min(ids)}")
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise ValueError(f"token id {max(ids)} is outside the vocabulary of {vocab_size} ids")
    if not isinstance(backtrack_id, int) or backtrack_id < 0:
        raise ValueError(f"backtrack_id must be a non-negative int, got {backtrack_id!r}")
    if not isinstance(prompt_len, int) or not 0 <= prompt_len <= len(ids):
        raise ValueError(f"prompt_len={prompt_len!r} is out of range for a sequence of {len(ids)} tokens")
    return ids


@dataclass
class RewindCounter:
    """The cache simulation of one sequence past its floor, by counts: what a decoder needs to
    apply deferred deletion (DESIGN §1). ``_simulate`` below and ``policy.stepper`` both run it,
    so the training layout and the physical rewind cannot disagree."""

    alive: int = 0  # cached tokens past the floor that are alive (the run's ⟨b⟩ excluded)
    run: int = 0  # ⟨b⟩ of the run in progress (still cached: deletion is deferred)

    def feed(self, is_backtrack: bool) -> tuple[int, int] | None:
        """Account one fed token. Returns ``(k, deleted)`` when it closes a run: the cache must
        first drop its newest ``k + deleted`` entries (the run's ⟨b⟩ and the tokens they delete)."""
        closed = self.close() if self.run and not is_backtrack else None
        if is_backtrack:
            self.run += 1
        else:
            self.alive += 1
        return closed

    def close(self) -> tuple[int, int]:
        """End the run in progress: ``(k, deleted)``, ``deleted = min(k, alive)`` (the floor is never deleted)."""
        k, deleted = self.run, min(self.run, self.alive)
        self.alive -= deleted
        self.run = 0
        return k, deleted


def _simulate(ids: list[int], backtrack_id: int, prompt_len: int):
    """Feed ``ids`` through a simulated cache. Returns (alive indices, events, deaths, positions).

    The cache is a stack: a closed ⟨b⟩-run drops its own ⟨b⟩ and the tokens it deletes from the
    end, before the next token is fed. ``deaths[k]`` is the raw index of the token fed right after
    k left the cache (``len(ids)`` if it never left), so the cache when t is fed holds exactly the
    k <= t with ``deaths[k] > t``. Prompt tokens are never backspaces: a ⟨b⟩ id inside the prompt is
    an ordinary token.
    """
    cache: list[int] = []  # raw indices currently in the cache, in order
    run_start = 0  # raw index of the first ⟨b⟩ of the run in progress
    sim = RewindCounter()
    events: list[RunEvent] = []
    deaths = [len(ids)] * len(ids)
    positions: list[int] = []

    def drop(closed: tuple[int, int], t: int) -> None:
        k, deleted = closed
        cut = len(cache) - k - deleted
        for gone in cache[cut:]:
            deaths[gone] = t
        del cache[cut:]
        events.append(RunEvent(start=run_start, length=k, deleted=deleted))

    for t, tok in enumerate(ids):
        is_b = tok == backtrack_id and t >= prompt_len
        if t >= prompt_len:
            if is_b and not sim.run:
                run_start = t
            closed = sim.feed(is_b)
            if closed:
                drop(closed, t)
        positions.append(len(cache))
        cache.append(t)
    if sim.run:
        drop(sim.close(), len(ids))
    return cache, events, deaths, positions


def backspace_trace(
    ids: Sequence[int], backtrack_id: int, *, prompt_len: int = 0, vocab_size: int | None = None
) -> BackspaceTrace:
    """Apply the backspaces in ``ids`` and report which raw tokens survive and every run."""
    ids = _validate(ids, backtrack_id, prompt_len, vocab_size)
    alive, events, _, _ = _simulate(ids, backtrack_id, prompt_len)
    return BackspaceTrace(alive=tuple(alive), events=tuple(events))


def apply_backspaces(
    ids: Sequence[int], backtrack_id: int, *, prompt_len: int = 0, vocab_size: int | None = None
) -> list[int]:
    """The effective sequence of ``ids``: a run of k ⟨b⟩ deletes the k tokens before the run.

    The first ``prompt_len`` tokens are never deleted; ⟨b⟩ beyond them are counted no-ops
    (see ``backspace_trace(...).surplus``). Example: ``P x1 x2 x3 ⟨b⟩ ⟨b⟩ y`` → ``P x1 y``.
    """
    ids = _validate(ids, backtrack_id, prompt_len, vocab_size)
    alive, _, _, _ = _simulate(ids, backtrack_id, prompt_len)
    return [ids[i] for i in alive]


def cache_layout(
    ids: Sequence[int], backtrack_id: int, *, prompt_len: int = 0, vocab_size: int | None = None
) -> CacheLayout:
    """The attention matrix ``[L, L]`` and ``position_ids [L]`` of hard backtracking.

    Token t attends exactly to the tokens alive in the inference cache when t is fed, and its
    position id is the number of them before it. For a ⟨b⟩-free sequence this is the causal
    layout with positions ``0..L-1``.
    """
    ids = _validate(ids, backtrack_id, prompt_len, vocab_size)
    if not ids:
        raise ValueError("cache_layout needs at least one token (got an empty sequence)")
    _, _, deaths, positions = _simulate(ids, backtrack_id, prompt_len)
    # query t reads key k iff k was fed by then and had not left the cache: k <= t < deaths[k]
    # (one broadcast comparison: building the rows as lists dominated collation in training)
    t = torch.arange(len(ids))
    attention = (t[None, :] <= t[:, None]) & (torch.tensor(deaths)[None, :] > t[:, None])
    return CacheLayout(attention=attention, position_ids=torch.tensor(positions, dtype=torch.long))


def layout_to_4d_mask(attention: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a bool attention ``[L, L]`` or ``[B, L, L]`` into the additive float mask ``[B, 1, L, L]``.

    Additive float (0 where allowed, the dtype's minimum where not) is the form every
    transformers attention implementation accepts (eager needs it; SDPA also takes bool).
    Flash-attention kernels take no 4D mask at all. A fully masked row would turn softmax into
    NaN, so it is refused.
    """
    if attention.dtype != torch.bool:
        raise ValueError(f"attention must be a bool tensor, got {attention.dtype}")
    if attention.dim() == 2:
        attention = attention.unsqueeze(0)
    if attention.dim() != 3 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be [L, L] or [B, L, L], got {tuple(attention.shape)}")
    if not attention.any(-1).all():
        raise ValueError("attention has a row with no allowed key; softmax over it would be NaN")
    mask = torch.zeros(attention.shape, dtype=dtype)
    mask.masked_fill_(~attention, torch.finfo(dtype).min)
    return mask.unsqueeze(1)  # (B, 1, L, L)
