"""One problem's search in progress: its tree, its live KV handles and its accounting.

Strategies are generators that read a ``SearchRun`` and yield the ``Expand`` requests of the
next round; the driver (``search/driver.py``) batches the requests of every run, draws the
children and adds them here. ``add_children`` applies the rules that every strategy shares:
rejected samples become "rejected" nodes, a node with P(backtrack) >= threshold is "pruned"
and its KV released at once (or, when the config ``keeps_pruned``, at the end of the round, so the
strategy may ``revive`` one), a finished step is "terminal".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search.accounting import Accounting, MeteredState, live_kv_bytes
from search.config import SearchConfig
from search.tree import ROOT, Tree

__all__ = ["AGGREGATES", "ENDING_STOP_REASONS", "Drawn", "Expand", "Outcome", "SearchRun", "path_p"]

# stop reasons of a step that ends the solution (no child can follow it)
ENDING_STOP_REASONS = ("eos", "answer", "context")


@dataclass(frozen=True)
class Expand:
    """Draw ``count`` new children of ``node`` at ``temperature``.

    ``keep=True`` keeps the node's KV handle after the round (the strategy may draw from it
    again); otherwise the driver releases it once the children exist. ``prefix`` / ``ban`` make
    the children rewrites of a sibling: hard backtracking to a point inside its step.
    """

    node: int
    count: int
    temperature: float
    keep: bool = False
    # a rewrite: each child keeps these alive tokens of a sibling's step and may not choose ``ban``
    # after them (``StepRequest.prefix`` / ``ban``)
    prefix: tuple[int, ...] = ()
    ban: int | None = None


@dataclass(frozen=True)
class Drawn:
    """A drawn child before it becomes a node: its ``Node`` fields and its KV handle."""

    fields: dict[str, Any]  # ids, raw_ids, text, raw_text, logprob, p_backtrack(_policy), answer, backtracks, stop_reason
    rejected: bool  # a ⟨b⟩-run crossed the step's start
    state: Any = None  # the engine's KV handle (None when rejected or replayed)
    kv_bytes: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a strategy returns: the chosen answer node (or None) and why the search stopped."""

    chosen: int | None
    reason: str  # "answer", or why there is none: "all_pruned", "no_answer", "max_nodes", ...
    votes: dict[str, float] | None = None  # answer -> vote mass, for voting strategies


@dataclass
class SearchRun:
    """The state of one problem's search. ``release`` is the engine's (a no-op in replay)."""

    tree: Tree
    config: SearchConfig
    release_state: Callable[[Any], None]
    problem_id: str | None = None
    handles: dict[int, Any] = field(default_factory=dict)  # node id -> unreleased KV handle
    kv_bytes: dict[int, int] = field(default_factory=dict)  # node id -> bytes of its own KV segment
    spares: dict[int, Any] = field(default_factory=dict)  # pruned this round -> KV handle (keeps_pruned only)
    acct: Accounting = field(default_factory=Accounting)
    prompt_state: Any = None

    # ---- building ---------------------------------------------------------------------------
    def set_root(self, ids: tuple[int, ...], text: str, *, state: Any, kv_bytes: int, tokens_run: int) -> None:
        self.tree.add_root(tuple(ids), text)
        self.prompt_state = state
        if state is not None:
            self.handles[ROOT] = state
        self.kv_bytes[ROOT] = kv_bytes
        self.acct.tokens_run += tokens_run
        self.note_kv()

    def add_children(self, parent: int, drawn: list[Drawn]) -> list[int]:
        """Append the drawn children of ``parent`` and give each its status; returns their ids."""
        cfg, ids = self.config, []
        for d in drawn:
            nid = self.tree.add_child(parent, **d.fields)
            ids.append(nid)
            node = self.tree.nodes[nid]
            self.acct.tokens_generated += len(node.raw_ids)
            self.kv_bytes[nid] = d.kv_bytes
            if d.rejected:
                self.tree.set_status(nid, "rejected", "a backtrack run crossed the step's start")
            elif cfg.prunes(node.p_backtrack):
                self.tree.set_status(nid, "pruned", f"P(backtrack) {node.p_backtrack:.4f} >= threshold {cfg.threshold:g}")
                if cfg.keeps_pruned and d.state is not None:
                    self.spares[nid] = d.state
                    continue
            elif self._settle(nid, d.state):
                continue
            if d.state is not None:  # pruned, terminal: never expanded, free its KV now
                self.release_state(d.state)
        return ids

    def _settle(self, nid: int, state: Any) -> bool:
        """Give an unpruned, unrejected node its status; True when it is open (``state`` kept)."""
        node = self.tree.nodes[nid]
        if node.stop_reason in ENDING_STOP_REASONS:
            self.tree.set_status(nid, "terminal", node.stop_reason)
        elif node.depth >= self.config.max_depth:
            self.tree.update(nid, status="terminal", answer=None, reason="max_depth")
        else:  # open: keep its handle until the strategy expands or drops it
            if state is not None:
                self.handles[nid] = state
            return True
        return False

    def revive(self, nid: int, why: str) -> None:
        """Undo the pruning of ``nid`` (pruned this round, config ``keeps_pruned``): it becomes open
        (its KV handle kept) or terminal, as if the threshold had spared it."""
        if self.tree.nodes[nid].status != "pruned":
            raise ValueError(f"node {nid} is {self.tree.nodes[nid].status!r}, not pruned")
        self.tree.set_status(nid, "open")
        state = self.spares.pop(nid, None)
        if not self._settle(nid, state) and state is not None:
            self.release_state(state)
        ended = self.tree.nodes[nid].reason  # a terminal's: how the step ended
        self.tree.update(nid, reason=f"{why} ({ended})" if ended else why)  # kept when it is expanded

    def drop_spares(self) -> None:
        """The round is over: free the KV of the nodes pruned in it."""
        while self.spares:
            self.release_state(self.spares.popitem()[1])

    def mark_expanded(self, nid: int, *, keep: bool) -> None:
        self.acct.expanded.add(nid)
        if self.tree.nodes[nid].status == "open":
            self.tree.update(nid, status="expanded")  # an open node's reason (if any) says why it was kept
        if not keep:
            self.release(nid)

    def release(self, nid: int) -> None:
        """Search draws no more children from ``nid``: free its handle (idempotent)."""
        state = self.handles.pop(nid, None)
        if state is not None:
            self.release_state(state)

    def close(self) -> None:
        self.note_kv()  # a metering engine's peak is final now
        self.drop_spares()
        for nid in list(self.handles):
            self.release(nid)

    def _meter(self) -> MeteredState | None:
        return self.prompt_state if isinstance(self.prompt_state, MeteredState) else None

    def live_kv(self) -> int:
        """KV bytes this problem holds now: the engine's count when it meters (see ``search.accounting``)."""
        meter = self._meter()
        if meter is not None:
            return meter.kv_usage()[0]
        return live_kv_bytes(self.tree, self.handles.keys() | self.spares.keys(), self.kv_bytes)

    def note_kv(self) -> None:
        """Update ``peak_kv_bytes``: the engine's peak when it meters, else the live per-node sum."""
        meter = self._meter()
        self.acct.note_kv(meter.kv_usage()[1] if meter is not None else self.live_kv())

    # ---- reading ----------------------------------------------------------------------------
    def open_children(self, nid: int) -> list[int]:
        return [c for c in self.tree.children[nid] if self.tree.nodes[c].status == "open"]

    def live_children(self, nid: int) -> list[int]:
        """Children a search may still use: open or terminal (not pruned, not rejected)."""
        return [c for c in self.tree.children[nid] if self.tree.nodes[c].status in ("open", "expanded", "terminal")]

    def p(self, nid: int) -> float:
        """The pruning signal of ``nid`` (0 for the root, which has none)."""
        p = self.tree.nodes[nid].p_backtrack
        return 0.0 if p is None or math.isnan(p) else float(p)

    def path_logprob(self, nid: int) -> float:
        return sum(self.tree.nodes[a].logprob for a in self.tree.path(nid))

    def answers(self) -> list[int]:
        """Terminal nodes that hold an answer, in id order."""
        return [n.id for n in self.tree.nodes if n.status == "terminal" and n.answer is not None]

    def over_budget(self, requests: list[Expand], elapsed_s: float) -> str | None:
        """The budget the next round would exhaust, or None."""
        cfg = self.config
        if len(self.tree) + sum(r.count for r in requests) > cfg.max_nodes:
            return "max_nodes"
        if self.acct.tokens_generated >= cfg.max_tokens:
            return "max_tokens"
        if cfg.time_limit_s is not None and elapsed_s >= cfg.time_limit_s:
            return "time_limit"
        if cfg.max_kv_bytes is not None and self.live_kv() > cfg.max_kv_bytes:
            return "max_kv_bytes"
        return None


def _path_max(run: SearchRun, n: int) -> float:
    return max(run.p(a) for a in run.tree.path(n))


def _path_prod(run: SearchRun, n: int) -> float:
    ok = 1.0
    for a in run.tree.path(n):
        ok *= 1.0 - run.p(a)
    return 1.0 - ok


# A path's P(error) from its steps' scores (the root has none: p = 0). "last" compares raw scores
# of nodes only, which is fair between siblings; "max" and "prod" compare paths of any depth.
AGGREGATES: dict[str, Callable[[SearchRun, int], float]] = {
    "last": lambda run, n: run.p(n),
    "max": _path_max,
    "prod": _path_prod,
}


def path_p(run: SearchRun, nid: int, aggregate: str) -> float:
    """P(the path to ``nid`` holds an error) by the rule ``aggregate`` (see ``AGGREGATES``)."""
    return AGGREGATES[aggregate](run, nid)
