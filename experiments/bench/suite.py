"""``rewind bench``: one harness for Rewind's speed claims, each a ratio against the peer a user
would otherwise use, measured side by side in the same run.

Each benchmark group lives in its own module and returns ``Row`` records:

| group | module | peer |
| --- | --- | --- |
| 1 decoding | ``decode`` | ``model.generate`` (tokens/s, batch 1 and 16); cost of one rewind |
| 2 kv | ``tree_search`` | the same search with ``share_kv=False`` (re-encodes every path) |
| 3 peers | ``tree_search`` | ``model.generate(num_beams=4)``, ``model.generate(num_return_sequences=8)`` |
| 4 verifier | ``tree_search`` / ``decode`` | the search / decoding time it rides on |
| 5 training | ``scaling`` | ``clean`` SFT tokens/s (``experiments.bench.train_throughput.measure``) |
| 6 scaling | ``scaling`` | one problem alone; the smallest tree |

Timing: every measurement is warmed up, then repeated; ours and the peer alternate within each
repetition (so load on a shared machine hits both alike) and a row reports the medians and the
median of the per-repetition ratios. ``--smoke`` runs every row tiny (seconds), for the tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from experiments.bench import decode, scaling, tree_search
from experiments.bench.config import GROUPS, BenchConfig
from experiments.bench.setup import Setup
from experiments.bench.timing import Row, machine

__all__ = ["RUNNERS", "run_bench", "to_markdown"]

# group id -> the rows it measures
RUNNERS: dict[str, Callable[[Setup], list[Row]]] = {
    "1": decode.decoding_rows, "2": tree_search.kv_rows, "3": tree_search.peer_rows,
    "4": lambda s: tree_search.verifier_search_rows(s) + decode.verifier_decode_rows(s),
    "5": scaling.training_rows, "6": scaling.scaling_rows,
}


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> tuple[list[Row], dict[str, Any]]:
    """Run the groups of ``cfg.only``; returns the rows and the run's metadata."""
    setup = Setup.build(cfg)
    rows: list[Row] = []
    t0 = time.perf_counter()
    for gid in sorted(cfg.groups):
        t = time.perf_counter()
        rows.extend(RUNNERS[gid](setup))
        if progress:
            print(f"[bench] {gid} {GROUPS[gid]}: {time.perf_counter() - t:.1f}s", flush=True)
    rows.sort(key=lambda r: (r.id[0], r.id))
    meta = {**machine(setup.device), "model": cfg.model, "params": setup.n_params,
            "sizes": asdict(cfg.sizes), "only": list(cfg.groups), "seed": cfg.seed,
            "total_s": round(time.perf_counter() - t0, 2)}
    return rows, meta


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    s = f"{x:.3g}" if a < 10 else f"{x:,.0f}" if a >= 1000 else f"{x:.1f}"
    return f"{s} {unit}".strip()


def to_markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The table (one line per row) followed by the notes of rows that carry one."""
    lines = [f"Model: {meta.get('model')} ({meta.get('params', 0):,} parameters) on {meta.get('device')}; "
             f"{meta.get('cpu')}, {meta.get('cores')} cores, {meta.get('torch_threads')} torch threads; "
             f"torch {meta.get('torch')}, transformers {meta.get('transformers')}; {meta.get('date')}", "",
             "| # | benchmark | ours | peer | ratio | target | met |",
             "| --- | --- | ---: | --- | ---: | ---: | :---: |"]
    for r in rows:
        peer = f"{r.peer_name}: {_fmt(r.peer, r.unit)}" if r.peer is not None else r.peer_name
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        ratio = _fmt(r.ratio) + ("×" if r.ratio is not None else "")
        lines.append(f"| {r.id} | {r.name} | {_fmt(r.ours, r.unit)} | {peer} | {ratio} | {r.target or '—'} | {met} |")
    notes = [f"- **{r.id}** ({r.ratio_means}) {r.note}".rstrip() for r in rows if r.note or r.ratio_means]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
