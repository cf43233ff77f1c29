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
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["GROUPS", "BenchConfig", "Row", "Sizes", "machine", "paired", "run_bench", "timed", "to_markdown"]

GROUPS: dict[str, str] = {
    "1": "decoding", "2": "kv", "3": "peers", "4": "verifier", "5": "training", "6": "scaling",
}


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each benchmark is. ``Sizes.full()`` for BENCHMARKS.md, ``Sizes.smoke()`` for tests."""

    reps: int = 5  # timed repetitions per measurement (medians over them), >= 1
    warmup: int = 1  # untimed repetitions first, >= 0
    decode_tokens: int = 64  # generated tokens per row in the decoding row
    decode_batches: tuple[int, ...] = (1, 16)  # batch sizes of the decoding row
    rewind_reps: int = 200  # timed rewinds (micro-benchmark)
    step_tokens: int = 24  # search: step-length cap (max_step_tokens)
    depth: int = 6  # search: max_depth
    beam_width: int = 4  # W
    beam_samples: int = 4  # M
    mcts_simulations: int = 64
    best_of: int = 8  # N of best-of-N
    train_batch: int = 16  # training row: examples per step
    train_steps: int = 8  # training row: timed steps per mode
    scale_problems: tuple[int, ...] = (1, 8, 64)
    scale_simulations: tuple[int, ...] = (8, 16, 32)  # MCTS simulations: tree size grows with them

    def __post_init__(self) -> None:
        for name in ("reps", "decode_tokens", "rewind_reps", "step_tokens", "depth", "beam_width", "beam_samples",
                     "mcts_simulations", "best_of", "train_batch", "train_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"Sizes.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"Sizes.warmup must be >= 0, got {self.warmup}")
        if len(self.scale_problems) < 2 or len(self.scale_simulations) < 2:
            raise ValueError("scaling needs at least two problem counts and two simulation counts for a line fit")

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(reps=1, warmup=0, decode_tokens=6, decode_batches=(1, 4), rewind_reps=20, step_tokens=4,
                   depth=2, beam_width=2, beam_samples=2, mcts_simulations=4, best_of=2, train_batch=4,
                   train_steps=1, scale_problems=(1, 2), scale_simulations=(2, 4))


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One ``rewind bench`` run."""

    model: str = "tiny"  # "tiny" (the built-in policy, random init) or a policy name/folder
    device: str = "auto"  # "auto" (cuda when present), "cpu" or "cuda"
    sizes: Sizes = field(default_factory=Sizes.full)
    only: tuple[str, ...] = tuple(GROUPS)  # group ids ("1".."6") to run
    seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but torch sees no CUDA device")
        bad = [g for g in self.only if g not in GROUPS]
        if bad or not self.only:
            raise ValueError(f"unknown benchmark row {bad[0] if bad else '(none)'!r}; rows are "
                             + ", ".join(f"{k} ({v})" for k, v in GROUPS.items()))

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table: ``ours`` against ``peer`` (same unit), and ``ratio`` (higher = better for us)."""

    id: str  # e.g. "1b"; the digit is the group
    name: str  # what is measured
    ours: float
    peer: float | None  # None when the row has no peer (a cost, a fit)
    unit: str
    peer_name: str
    ratio: float | None  # ours vs peer, oriented so that > 1 favours Rewind (see ``ratio_means``)
    ratio_means: str = ""  # e.g. "ours tokens/s ÷ peer tokens/s"
    target: str = ""  # e.g. ">= 0.9"; empty when none
    met: bool | None = None  # None when no target
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # raw numbers behind the row (JSON only)


def check(value: float | None, target: str) -> bool | None:
    """Does ``value`` meet ``target`` (">= x" or "<= x")? None when there is no target or value."""
    if not target or value is None or not math.isfinite(value):
        return None
    op, x = target.split()
    return value >= float(x) if op == ">=" else value <= float(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, with the device synchronised on both ends."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def paired(ours: Callable[[], Any], peer: Callable[[], Any], *, reps: int, warmup: int,
           device: torch.device) -> dict[str, Any]:
    """Time ``ours`` and ``peer`` alternately (``warmup`` untimed rounds, then ``reps`` timed).

    Returns medians ``ours_s``/``peer_s``, ``ratio`` = median over repetitions of peer_s / ours_s
    (> 1: ours is faster), every time, and the last results ``ours_out``/``peer_out``."""
    for _ in range(warmup):
        ours()
        peer()
    a, b, oa, ob = [], [], None, None
    for i in range(reps):
        # alternate who goes first, so a slow phase of the machine does not always hit the same side
        if i % 2 == 0:
            ta, oa = timed(ours, device)
            tb, ob = timed(peer, device)
        else:
            tb, ob = timed(peer, device)
            ta, oa = timed(ours, device)
        a.append(ta)
        b.append(tb)
    return {"ours_s": statistics.median(a), "peer_s": statistics.median(b),
            "ratio": statistics.median(y / x for x, y in zip(a, b)), "ours_all_s": a, "peer_all_s": b,
            "ours_out": oa, "peer_out": ob}


def repeated(fn: Callable[[], Any], *, reps: int, warmup: int, device: torch.device) -> tuple[float, Any]:
    """(median seconds over ``reps`` after ``warmup``, last result) of ``fn``."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(reps):
        t, out = timed(fn, device)
        times.append(t)
    return statistics.median(times), out


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: CPU model, cores, threads, torch/transformers versions, GPU."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> tuple[list[Row], dict[str, Any]]:
    """Run the groups of ``cfg.only``; returns the rows and the run's metadata."""
    from experiments.bench import decode as bench_decode
    from experiments.bench import scaling as bench_scaling
    from experiments.bench import tree_search as bench_search
    from experiments.bench.setup import Setup

    setup = Setup.build(cfg)
    runners: dict[str, Callable[[Setup], list[Row]]] = {
        "1": bench_decode.decoding_rows, "2": bench_search.kv_rows, "3": bench_search.peer_rows,
        "4": lambda s: bench_search.verifier_search_rows(s) + bench_decode.verifier_decode_rows(s),
        "5": bench_scaling.training_rows, "6": bench_scaling.scaling_rows,
    }
    rows: list[Row] = []
    t0 = time.perf_counter()
    for gid in sorted(cfg.only):
        t = time.perf_counter()
        rows.extend(runners[gid](setup))
        if progress:
            print(f"[bench] {gid} {GROUPS[gid]}: {time.perf_counter() - t:.1f}s", flush=True)
    rows.sort(key=lambda r: (r.id[0], r.id))
    meta = {**machine(setup.device), "model": cfg.model, "params": setup.n_params,
            "sizes": asdict(cfg.sizes), "only": list(cfg.only), "seed": cfg.seed,
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
