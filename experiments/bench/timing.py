"""Timing and the table's row: every measurement synchronised, warmed up and repeated; ours and
the peer alternate within each repetition."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers

__all__ = ["Row", "check", "machine", "paired", "timed"]


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


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: CPU model, cores, threads, torch/transformers versions, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
