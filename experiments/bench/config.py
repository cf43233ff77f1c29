"""What one ``rewind bench`` run measures: its flags (``BenchConfig``, each field a flag) and how
big each benchmark is (``Sizes``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from search.knobs import knob

__all__ = ["GROUPS", "BenchConfig", "Sizes", "parse_only"]

GROUPS: dict[str, str] = {
    "1": "decoding", "2": "kv", "3": "peers", "4": "verifier", "5": "training", "6": "scaling",
}
_NAMES = {name: gid for gid, name in GROUPS.items()}


def parse_only(text: str) -> tuple[str, ...]:
    """'1,kv,6' -> ('1', '2', '6'); empty -> every group."""
    if not text.strip():
        return tuple(GROUPS)
    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        gid = part if part in GROUPS else _NAMES.get(part)
        if gid is None:
            raise ValueError(f"unknown benchmark row {part!r}; rows are "
                             + ", ".join(f"{k} ({v})" for k, v in GROUPS.items()))
        if gid not in out:
            out.append(gid)
    return tuple(out)


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

    out: str = knob("runs/bench", "folder for bench.md and bench.json")
    model: str = knob("tiny", "'tiny' (the built-in policy, random init) or a policy name/folder")
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "auto = cuda when present")
    only: str = knob("", "comma-separated rows to run, by number or name: "
                     + ", ".join(f"{k}={v}" for k, v in GROUPS.items()) + " (empty: all)")
    smoke: bool = knob(False, "every row tiny and fast (seconds; what the tests run)", flag=True)
    reps: int | None = knob(None, "timed repetitions per measurement, >= 1 (None: 5, or 1 with --smoke)")
    seed: int = knob(0, "model init and problem seed")

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but torch sees no CUDA device")
        parse_only(self.only)
        if self.reps is not None and (isinstance(self.reps, bool) or self.reps < 1):
            raise ValueError(f"reps must be >= 1, got {self.reps}")

    @property
    def groups(self) -> tuple[str, ...]:
        """The group ids ("1".."6") to run."""
        return parse_only(self.only)

    @property
    def sizes(self) -> Sizes:
        sizes = Sizes.smoke() if self.smoke else Sizes.full()
        return sizes if self.reps is None else dataclasses.replace(sizes, reps=self.reps)

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
