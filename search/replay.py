"""Replay a recorded search at another threshold, without the model.

Sampling is seeded per node path, so a live run at threshold τ draws exactly the children that
the recorded tree holds at the same seed paths. ``replay`` re-runs the strategy on the recorded
children (scores included) with τ's pruning rule. It is exact wherever the recorded tree holds
every child that τ's run asks for; where it does not (a node the recorded run pruned, dropped
or never reached), ``exact`` is False and ``missing`` lists the recorded node ids whose children
were needed. Wall-clock budgets are not replayed; KV and model-token counts are not reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from search.config import CONFIGS, SearchConfig
from search.driver import drive
from search.run import Drawn, Expand, SearchRun
from search.tree import ROOT, Tree

__all__ = ["ReplayResult", "replay"]

_COPIED = ("ids", "raw_ids", "text", "raw_text", "logprob", "p_backtrack", "p_backtrack_policy", "answer",
           "backtracks", "stop_reason", "token_logprobs", "forced", "banned")
_NOT_REPLAYED = ("tokens_run", "tokens_saved", "peak_kv_bytes", "verifier_calls", "nodes_scored", "wall_s")


@dataclass(frozen=True)
class ReplayResult:
    """The outcome the strategy reaches at ``threshold`` on the recorded tree's samples."""

    answer: str | None
    text: str | None
    tree: Tree  # the replayed tree; node ids are in replay order, ``source[i]`` is node i's recorded id
    source: tuple[int, ...]
    stats: dict[str, Any]
    threshold: float
    exact: bool  # the recorded tree held every child the run at ``threshold`` draws
    missing: tuple[int, ...]  # recorded node ids whose (further) children that run would draw


def replay(tree: Tree, threshold: float, **knobs: Any) -> ReplayResult:
    """Recompute the search outcome of ``tree`` (recorded by ``solve``) at ``threshold``.

    ``knobs`` may change other config fields too (e.g. ``width`` smaller than recorded).
    """
    config = _config_of(tree, threshold, knobs)
    source = _TreeSource(tree)
    run = SearchRun(tree=Tree(question=tree.question, config=config.to_dict()), config=config,
                    release_state=lambda state: None)
    root = tree.nodes[ROOT]
    run.set_root(root.ids, root.text, state=None, kv_bytes=0, tokens_run=0)
    source.origin[id(run)] = [ROOT]
    ((outcome, _),) = drive([run], source, start=time.perf_counter(), use_clock=False)
    out, answer, text = run.tree, None, None
    if outcome.chosen is not None:
        out.chosen = out.path(outcome.chosen)
        answer, text = out.nodes[outcome.chosen].answer, out.solution_text(outcome.chosen)
    stats = run.acct.stats(out, wall_s=0.0, reason=outcome.reason)
    for key in _NOT_REPLAYED:
        stats.pop(key)
    if outcome.votes is not None:
        stats["votes"] = dict(outcome.votes)
    out.stats = stats
    missing = tuple(source.missing)
    return ReplayResult(answer=answer, text=text, tree=out, source=tuple(source.origin[id(run)]), stats=stats,
                        threshold=float(threshold), exact=not missing, missing=missing)


def _config_of(tree: Tree, threshold: float, knobs: dict[str, Any]) -> SearchConfig:
    recorded = dict(tree.config)
    strategy = recorded.pop("strategy", None)
    if strategy not in CONFIGS:
        raise ValueError(f"the tree's config names no known strategy ({strategy!r}); was it recorded by search.solve?")
    cls = CONFIGS[strategy]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(knobs) - names)
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r} for strategy {strategy!r}")
    values = {k: v for k, v in recorded.items() if k in names}
    values.update(knobs, threshold=threshold, time_limit_s=None)
    return cls(**values)


class _TreeSource:
    """Serves children from the recorded tree by seed path; notes what it lacks."""

    def __init__(self, recorded: Tree) -> None:
        self.recorded = recorded
        self.by_path = {n.seed_path: n.id for n in recorded.nodes}
        self.origin: dict[int, list[int]] = {}
        self.missing: list[int] = []

    def draw(self, batch: Sequence[tuple[SearchRun, Expand]]) -> list[list[Drawn]]:
        out = []
        for run, req in batch:
            node = run.tree.nodes[req.node]
            first = len(run.tree.children[req.node])
            drawn = []
            for i in range(first, first + req.count):
                rid = self.by_path.get((*node.seed_path, i))
                if rid is not None and not _same_draw(self.recorded.nodes[rid], req):
                    rid = None  # the recorded child there was drawn another way (another rewrite, or none)
                if rid is None:
                    src = self.origin[id(run)][req.node]
                    if src not in self.missing:
                        self.missing.append(src)
                    break
                rec = self.recorded.nodes[rid]
                self.origin[id(run)].append(rid)
                drawn.append(Drawn(fields={k: getattr(rec, k) for k in _COPIED}, rejected=rec.status == "rejected"))
            out.append(drawn)
        return out


def _same_draw(rec, req: Expand) -> bool:
    """True when the recorded child came from the same request kind: the same rewrite prefix and ban."""
    k = len(req.prefix)
    return rec.forced == k and rec.banned == req.ban and tuple(rec.raw_ids[:k]) == tuple(req.prefix)
