"""Benchmark: seconds per epoch of step-verifier training, today's path against the one before it.

Not a test. Every variant trains a fresh ``StepVerifier`` of the demo's shape (width 96, 2 layers,
dropout 0.1, feature dropout 0.5, batches of 256 steps as whole sibling groups) for the same number
of epochs on the same rows, validation scoring included, as ``rewind train-verifier --kind step``
does:

- ``before``: a Python loop over each batch's rows (``collate_steps``) and ``nn.Dropout``, fp32 —
  the training path up to 2026-11-30;
- ``fp32``: rows gathered from a ``PackedSteps`` store and ``UniformDropout`` (the default);
- ``bf16``: the same under bf16 autocast (``--verifier-precision``; fp32 weights and scoring).

    python -m experiments.bench.verifier_epoch --run RUN [--epochs 1]   # RUN: a `rewind demo` folder
    python -m experiments.bench.verifier_epoch --synthetic 3000          # no run: random steps

Prints and writes ``OUT/verifier_epoch.md`` / ``.json``; ratios are against ``before`` in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.flags import add_config_flags, config_from_args
from policy.atomic import atomic_write_json, atomic_write_text
from search.interfaces import StepView
from search.knobs import knob
from verifier import step_head, step_train
from verifier.splits import split_problems
from verifier.step_data import StepData

__all__ = ["VerifierEpochConfig", "main"]

VARIANTS = ("before", "fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class VerifierEpochConfig:
    run: str | None = knob(None, "a demo run folder whose verifier_train/ holds steps.pt and reference_steps.pt",
                           required=False)
    synthetic: int = knob(0, "instead of a run: this many random steps (hidden size 128, 2 per sibling group)")
    epochs: int = knob(1, "epochs per variant (>= 1)")
    variants: str = knob(",".join(VARIANTS), "comma-separated, of before, fp32, bf16")
    out: str = knob("runs/verifier_epoch", "folder for verifier_epoch.md and .json")

    def __post_init__(self) -> None:
        if bool(self.run) == bool(self.synthetic > 0):
            raise ValueError("give exactly one of --run RUN and --synthetic N (N >= 1)")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        bad = set(self.variants.split(",")) - set(VARIANTS)
        if bad or not self.variants:
            raise ValueError(f"--variants takes {', '.join(VARIANTS)}; got {self.variants!r}")


def _load(path: Path) -> StepData:
    key = torch.load(path, weights_only=True)["key"]
    data = StepData.load(path, key=key)
    if data is None:
        raise ValueError(f"{path} could not be read as labelled steps")
    return data


def _run_data(run: Path) -> tuple[StepData, StepData]:
    """The training and validation rows ``train_step_verifier`` builds from the run's labels."""
    folder = run / "verifier_train"
    if not (folder / "steps.pt").exists():
        raise SystemExit(f"{folder}/steps.pt is missing: run `rewind demo` into {run} first")
    own = _load(folder / "steps.pt")
    split = split_problems(own.problem_ids, test_share=0.25, val_share=0.15, seed=0)
    train = own.of_problems(split["train"])
    if (folder / "reference_steps.pt").exists():
        train = train.concat(_load(folder / "reference_steps.pt"))
    return train, own.of_problems(split["val"])


def _synthetic(n: int, seed: int = 0) -> tuple[StepData, StepData]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows in (n, max(2, n // 8)):
        d = StepData()
        for i in range(rows):
            T = int(torch.randint(12, 42, (1,), generator=g))
            d.views.append(StepView(torch.randn(T, 128, generator=g), -torch.rand(T, generator=g), torch.rand(T, generator=g),
                                    1 + i % 5, ids=tuple(int(x) for x in torch.randint(0, 100, (T,), generator=g))))
            d.labels.append(i % 2)
            d.groups.append(i // 2)
            for name in ("kinds", "problem_ids", "texts"):
                getattr(d, name).append("")
            for name in ("logprobs", "path_logprobs", "p_policy"):
                getattr(d, name).append(0.0)
            d.prefix_ids.append(())
        out.append(d)
    return out[0], out[1]


@contextmanager
def _before():
    """The training path before 2026-11-30: per-row collation and ``nn.Dropout``."""
    saved = step_train.batch_of, step_head.UniformDropout
    step_train.batch_of = lambda data, rows, head: head.batch_of([data.views[i] for i in rows])
    step_head.UniformDropout = nn.Dropout
    try:
        yield
    finally:
        step_train.batch_of, step_head.UniformDropout = saved


def measure(train: StepData, val: StepData, variant: str, epochs: int) -> float:
    """Wall seconds of ``fit_step_verifier`` for ``epochs`` epochs of ``variant``."""
    kw = dict(hidden_size=int(train.views[0].hidden.shape[-1]), width=96, layers=2, dropout=0.1, batch_size=256,
              epochs=epochs, patience=epochs + 1, feature_dropout=0.5, digit_ids=list(range(4, 14)), progress=False,
              precision="bf16" if variant == "bf16" else "fp32")
    for d in (train, val):
        d.__dict__.pop("_packed", None)  # every variant pays for its own store
    random.seed(0)
    t0 = time.perf_counter()
    if variant == "before":
        with _before():
            step_train.fit_step_verifier(train, val, **kw)
    else:
        step_train.fit_step_verifier(train, val, **kw)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, VerifierEpochConfig)
    cfg = config_from_args(ap.parse_args(argv), VerifierEpochConfig)
    train, val = _run_data(Path(cfg.run)) if cfg.run else _synthetic(cfg.synthetic)
    variants = cfg.variants.split(",")
    secs = {v: measure(train, val, v, cfg.epochs) for v in variants}
    base = secs.get("before")
    lines = [f"step verifier training: {len(train)} training steps, {len(val)} validation steps, {cfg.epochs} epoch(s); "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
             "", "| variant | s per epoch | × before |", "|---|---|---|"]
    for v, s in secs.items():
        lines.append(f"| {v} | {s / cfg.epochs:.1f} | {'–' if base is None else f'{base / s:.2f}'} |")
    text = "\n".join(lines)
    print(text)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "verifier_epoch.md", text + "\n")
    atomic_write_json(out / "verifier_epoch.json", {"config": dataclasses.asdict(cfg), "seconds": secs, "train_steps": len(train),
                                                     "val_steps": len(val), "epochs": cfg.epochs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
