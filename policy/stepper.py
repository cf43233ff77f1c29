"""The decoding stepper: one loop (choose, stop, feed with rewind, drop finished rows) that serves
both ``policy.generate`` and the search engine (``policy.engine``).

A caller builds ``Row``s — each a store handle past its floor (a forked child of a prompt or of
a node) with the logits of its next token — and a ``Rules`` object that says when a row stops;
``Stepper.run`` yields ``(row, reason)`` as rows finish. The ⟨b⟩ caps, the backtrack bias, the
seeded sampling and the deferred deletion (``RewindBatch`` with ``layout.RewindCounter``) are
written here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from policy.decoding import RewindBatch
from policy.kv_store import Handle, KVStore
from policy.layout import RewindCounter
from policy.sampling import SamplingConfig, choose_tokens

__all__ = ["Row", "Rules", "Stepper"]


@dataclass(eq=False)
class Row:
    """One decoding row: its handle (tokens past the floor), its sampler and what it produced."""

    index: object  # the caller's key of this row
    handle: Handle
    gen: torch.Generator | None = None
    sim: RewindCounter = field(default_factory=RewindCounter)
    logits: torch.Tensor | None = None  # [V] next-token logits (set when the row is yielded)
    hidden: torch.Tensor | None = None  # [H] hidden state at the last fed token (None: none fed)
    raw: list[int] = field(default_factory=list)  # chosen tokens, ⟨b⟩ included
    logprobs: list[float] = field(default_factory=list)  # per raw token, temperature 1, no bias
    # per alive fed token past the floor: (log-prob, entropy, hidden [H]) — the verifier's view
    alive: list[tuple[float, float, torch.Tensor]] = field(default_factory=list)
    fed_hidden: list[torch.Tensor] = field(default_factory=list)  # every fed token's hidden, when kept
    n_backtracks: int = 0  # ⟨b⟩ chosen
    line_backtracks: int = 0  # ⟨b⟩ chosen since the last newline
    cap_hit: bool = False  # the total ⟨b⟩ cap forbade ⟨b⟩ at some step
    fed: int = 0  # tokens fed through the model
    forced: tuple[int, ...] = ()  # the row's first tokens, fed as if chosen (a rewrite's kept prefix)
    ban: int | None = None  # a token the row may not choose right after ``forced``
    _pending: tuple[float, float] = (0.0, 0.0)


class Rules(Protocol):
    """When a row stops: before its chosen token is fed (it is never fed) or after."""

    def before_feed(self, row: Row, token: int) -> str | None: ...

    def after_feed(self, row: Row, token: int) -> str | None: ...


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """The knobs of the stepper, shared by generate and search."""

    backtrack_id: int | None
    newlines: frozenset[int]
    sampling: SamplingConfig
    rewind: bool = True  # apply ⟨b⟩-runs to the cache (False: the soft ablation)
    backtrack_bias: float = 0.0  # added to the ⟨b⟩ logit when choosing (not to log-probs)
    max_backtracks: int | None = None  # most ⟨b⟩ per row (None: no cap)
    max_backtracks_per_line: int | None = None  # most ⟨b⟩ since the last newline
    entropies: bool = False  # compute each token's entropy (the verifier's view)
    keep_hidden: bool = False  # keep every fed token's hidden state (``Row.fed_hidden``)


class Stepper:
    """Decodes rows over a ``KVStore`` until each stops; see the module docstring."""

    def __init__(self, model: torch.nn.Module, store: KVStore, config: StepConfig, rules: Rules, *,
                 on_forward: Callable[[list[Row], torch.Tensor, torch.Tensor], None] | None = None):
        self.model, self.store, self.cfg, self.rules, self.on_forward = model, store, config, rules, on_forward

    def run(self, rows: Sequence[Row], logits: torch.Tensor) -> Iterator[tuple[Row, str]]:
        """Decode ``rows`` whose next-token logits are ``logits [B, V]``; yields ``(row, reason)``."""
        live = list(rows)
        batch = RewindBatch(self.model, self.store, [r.handle for r in live], self.cfg.backtrack_id,
                            rewind=self.cfg.rewind)
        batch.sims = [r.sim for r in live]
        while live:
            chosen = self._choose(live, logits)
            stopped, keep = _split(live, logits, [self.rules.before_feed(row, chosen[b]) for b, row in enumerate(live)])
            yield from stopped
            live, logits = self._select(batch, live, logits, keep)
            if not live:
                return
            toks = [row.raw[-1] for row in live]
            logits, hidden, deleted = batch.feed(toks)
            if self.on_forward is not None:
                self.on_forward(live, logits, hidden)
            reasons = []
            for b, row in enumerate(live):
                self._fed(row, toks[b], deleted[b], hidden[b])
                reasons.append(self.rules.after_feed(row, toks[b]))
            stopped, keep = _split(live, logits, reasons)
            yield from stopped
            live, logits = self._select(batch, live, logits, keep)

    @torch.inference_mode()  # only Python values leave it
    def _choose(self, live: list[Row], logits: torch.Tensor) -> list[int]:
        """Pick each row's next token (bias and caps applied) and record it on the row."""
        cfg, bid = self.cfg, self.cfg.backtrack_id
        if not torch.isfinite(logits).all():
            bad = [r.index for b, r in enumerate(live) if not torch.isfinite(logits[b]).all()]
            raise ValueError(f"the model produced NaN/inf logits for row(s) {bad}; check the weights and dtype")
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1) if cfg.entropies else torch.zeros(len(live))  # [B] nats
        proc = logits
        banned = [b for b, r in enumerate(live) if r.ban is not None and len(r.raw) == len(r.forced)]
        if bid is not None or banned:
            proc = logits.clone()
        for b in banned:
            proc[b, live[b].ban] = float("-inf")
        if bid is not None:
            proc[:, bid] += cfg.backtrack_bias
            for b, row in enumerate(live):
                total = cfg.max_backtracks is not None and row.n_backtracks >= cfg.max_backtracks
                line = cfg.max_backtracks_per_line is not None and row.line_backtracks >= cfg.max_backtracks_per_line
                row.cap_hit |= total
                if total or line:
                    proc[b, bid] = float("-inf")
        gens = None if cfg.sampling.greedy else [r.gen for r in live]
        chosen = choose_tokens(proc, cfg.sampling, gens).tolist()
        for b, row in enumerate(live):  # a rewrite's prefix: fed as chosen, its log-probs are the model's
            if len(row.raw) < len(row.forced):
                chosen[b] = row.forced[len(row.raw)]
        lp = logp.gather(-1, torch.tensor(chosen, device=logp.device)[:, None]).squeeze(-1).tolist()
        ent = entropy.tolist()
        for b, (row, c) in enumerate(zip(live, chosen)):
            row.raw.append(c)
            row.logprobs.append(lp[b])
            row._pending = (lp[b], ent[b])
            if c == bid:
                row.n_backtracks += 1
                row.line_backtracks += 1
            elif c in cfg.newlines:
                row.line_backtracks = 0
        return chosen

    def _fed(self, row: Row, token: int, deleted: int, hidden: torch.Tensor) -> None:
        """Mirror a fed token in the row's alive view: a ⟨b⟩ adds nothing (its run is deleted with
        it); a token that closed a run first drops the alive tokens the run deleted."""
        row.fed += 1
        row.hidden = hidden
        if self.cfg.keep_hidden:
            row.fed_hidden.append(hidden.cpu())
        if self.cfg.rewind and token == self.cfg.backtrack_id:
            return
        if deleted:
            del row.alive[len(row.alive) - deleted:]
        row.alive.append((row._pending[0], row._pending[1], hidden))

    @staticmethod
    def _select(batch: RewindBatch, live: list[Row], logits: torch.Tensor, keep: list[int]):
        if len(keep) == len(live):
            return live, logits
        batch.select(keep)
        return [live[b] for b in keep], logits[keep]


def _split(live: list[Row], logits: torch.Tensor, reasons: list) -> tuple[list[tuple[Row, str]], list[int]]:
    """``(rows whose stop rule fired, with their reason; indices of the others)``; a stopped row
    keeps its next-token logits."""
    stopped, keep = [], []
    for b, (row, stop) in enumerate(zip(live, reasons)):
        if stop:
            row.logits = logits[b]
            stopped.append((row, stop))
        else:
            keep.append(b)
    return stopped, keep
