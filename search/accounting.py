"""What a search cost: token counts, KV memory and node counts, reported in ``Solution.stats``.

Definitions (DESIGN §5):

- ``tokens_generated``: raw tokens sampled (⟨b⟩ and rejected steps included).
- ``tokens_run``: tokens fed through the model (prompt prefill + every expansion, with the
  prefix re-encoding of ``share_kv=False`` included). With sharing, every token of the tree is fed
  exactly once *except the last token of a step that ends on EOS, a rejection or the context
  limit*: it is chosen but never fed (nothing follows it). So ``tokens_run`` equals the fed tokens
  of the tree and is a little below ``tokens_in_tree`` (measured 0.966-0.999 on the demo policy;
  ``experiments.bench.tree_search.fed_tokens`` counts the fed ones, row 2c/2d of ``rewind bench``).
- ``tokens_in_tree``: raw tokens stored in the tree, prompt included.
- ``tokens_saved``: prefix tokens that KV sharing did not recompute: each expansion request's path
  once (the children of one request share a single encoding of it), as ``RewindEngine`` counts.
- ``peak_kv_bytes``: the engine's own count. An engine whose KV handles are ``MeteredState``
  (``RewindEngine``: its ``KVStore`` meters every slot a problem's tree holds, the prompt and
  the rows of an expansion in progress included; a prompt prefix shared by several problems is
  held once and counted toward none of them) reports the most bytes the problem held at once,
  and search reads it — it keeps no second bookkeeping. Only for an engine that does not
  meter (a scripted test engine) search sums the per-node ``kv_bytes`` the engine returned:
  a segment is live while its handle is not released or a descendant's is, summed after every
  expansion round (before that round's releases), maximised over the run. Replays report none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from search.tree import Tree

__all__ = ["Accounting", "MeteredState", "live_kv_bytes"]


@runtime_checkable
class MeteredState(Protocol):
    """A KV handle whose engine counts its problem's KV memory (optional for engines)."""

    def kv_usage(self) -> tuple[int, int]:
        """(live bytes, peak bytes) of every KV slot held for the problem this handle belongs to."""
        ...


def live_kv_bytes(tree: Tree, unreleased: Iterable[int], kv_bytes: dict[int, int]) -> int:
    """Bytes of KV held for ``tree``: every unreleased node and all its ancestors."""
    live: set[int] = set()
    for nid in unreleased:
        while nid >= 0 and nid not in live:
            live.add(nid)
            nid = tree.nodes[nid].parent
    return sum(kv_bytes.get(n, 0) for n in live)


@dataclass
class Accounting:
    """Counters of one problem's search; ``stats()`` gives the ``Solution.stats`` dict."""

    tokens_generated: int = 0
    tokens_run: int = 0
    tokens_saved: int = 0
    peak_kv_bytes: int = 0
    verifier_calls: int = 0
    nodes_scored: int = 0
    rounds: int = 0
    expanded: set[int] = field(default_factory=set)

    def note_kv(self, live_bytes: int) -> None:
        self.peak_kv_bytes = max(self.peak_kv_bytes, live_bytes)

    def stats(self, tree: Tree, *, wall_s: float, reason: str) -> dict[str, Any]:
        statuses = [n.status for n in tree.nodes]
        return {
            "tokens_generated": self.tokens_generated,
            "tokens_run": self.tokens_run,
            "tokens_in_tree": tree.count_tokens(),
            "tokens_saved": self.tokens_saved,
            "peak_kv_bytes": self.peak_kv_bytes,
            "nodes": len(tree),
            "nodes_expanded": len(self.expanded),
            "nodes_pruned": statuses.count("pruned"),
            "nodes_rejected": statuses.count("rejected"),
            "nodes_terminal": statuses.count("terminal"),
            "verifier_calls": self.verifier_calls,
            "nodes_scored": self.nodes_scored,
            "rounds": self.rounds,
            "wall_s": round(wall_s, 6),
            "reason": reason,
        }
