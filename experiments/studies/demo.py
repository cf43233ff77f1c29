"""``rewind demo``: the whole pipeline on the built-in task, into one run folder.

Stages (each records ``stages/<name>.json`` when done and is skipped on a rerun):

1. ``policy``   — train the tiny policy in ``hard`` mode (``train/``; resumes from checkpoints)
2. ``verifier`` — train the verifier head on the frozen policy (``verifier_train/``)
3. ``solve``    — solve held-out problems with decode, greedy, best-of-N, beam and MCTS
4. ``sweep``    — beam search at a grid of verifier thresholds
5. ``diagnose`` — the headroom report, ``rewind diagnose`` (``diagnose/``)
6. ``report``   — ``summary.md``, plots, example trees; the run becomes the default for ``search.solve``

Stages 1–5 each run in a fresh process (``isolated``).

A folder holds one configuration: a rerun with another configuration into the same folder is
refused (``--overwrite`` starts it afresh), so no table ever mixes two configurations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from experiments.studies import demo_stages as st
from experiments.wiring import set_default_run
from policy.atomic import atomic_write_json
from search.knobs import knob as _f

__all__ = ["DemoConfig", "run_demo"]

DEMO_FORMAT_VERSION = 2  # 2: the step verifier and the diagnose stage


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """What ``rewind demo`` runs. ``quick`` shrinks every stage to a 1–2 minute smoke run."""

    out: str = _f("runs/demo", "run folder")
    quick: bool = _f(False, "smoke version: tiny data and budgets (1-2 minutes)")
    overwrite: bool = _f(False, "delete an existing run folder of another configuration first")
    seed: int = _f(0, "seed for data, training and search")
    train_problems: int = _f(8000, "training problems for the policy (>= 8)")
    train_epochs: float = _f(2.0, "passes over the training examples (> 0)")
    max_train_steps: int = _f(-1, "cap on optimiser steps (-1: the epochs decide)")
    verifier_problems: int = _f(400, "problems whose sibling steps label the step verifier (>= 8)")
    reference_problems: int = _f(0, "reference solutions whose correct and slipped steps add feature-head labels (>= 0; "
                                    "4000 before the token head checked the arithmetic: with it, 44.5% vs 42.0% "
                                    "beam on 200 test problems, 2.5 points within noise, at twice the verifier stage)")
    verifier_epochs: int = _f(4, "passes of the step verifier over its labels (>= 1; the best by validation "
                                  "sibling AUROC is kept)")
    verifier_heads: int = _f(1, "step verifiers trained on the same labels from seeds seed, seed+1, ...; > 1 "
                                "searches with their ensemble (the mean of calibrated logits; each head one more "
                                "training; >= 1)")
    token_head_problems: int = _f(20000, "training-split problems whose reference lines and their wrong-fact versions "
                                         "train the verifier's token head (it reads the step's tokens only and checks "
                                         "the arithmetic; the verifier is its mixture with the feature head; issue 14: "
                                         "held-out sibling AUROC 0.86 -> 0.99); 0: the feature head alone (>= 0)")
    token_head_steps: int = _f(1000, "optimiser steps of the token head (>= 1; it trains in a second process, one "
                                    "thread, while the policy's own-step labels are drawn)")
    diagnose_problems: int = _f(64, "held-out problems of the headroom report, `rewind diagnose` (>= 1)")
    eval_problems: int = _f(64, "held-out test problems solved by every method (>= 1)")
    sweep_problems: int = _f(24, "held-out problems in the threshold sweep (>= 1)")
    thresholds: tuple[float, ...] = _f((0.2, 0.35, 0.5, 0.65, 0.8, 1.0), "verifier thresholds of the sweep")
    diagnose_thresholds: tuple[float, ...] = _f((0.5, 0.8, 1.0), "verifier thresholds of the diagnose stage's "
                                                "pruned searches (the sweep stage covers the full grid)")
    threshold: float | None = _f(None, "pruning threshold of the solve stage, in [0, 1] (default: the verifier's "
                                       "calibrated one, which spares right validation steps; 0.5 without one)")
    best_of_n: int = _f(4, "samples of best-of-N (>= 1)")
    beam_width: int = _f(4, "beam width W (>= 1)")
    beam_samples: int = _f(2, "children per beam M (>= 1)")
    mcts_simulations: int = _f(8, "MCTS simulations (>= 1)")
    mcts_children: int = _f(2, "MCTS children per expansion (>= 1)")
    example_trees: int = _f(2, "problems per search strategy whose trees are exported as HTML")
    precision: Literal["auto", "fp32", "bf16"] = _f(
        "fp32", "autocast of policy and verifier training: fp32, bf16, or auto = bf16 where the machine multiplies "
        "bf16 natively (a GPU, or a CPU with AVX512-BF16 / AMX), else fp32; inference is fp32 either way. bf16 "
        "cut the demo from 10.5 to 9.4 minutes on 2 cores, but the policy it trained (same eval loss) gave three "
        "verifier beams +4.5 / +3.5 / +0.0 points over greedy against +9.0 with fp32 (README, issue 14), so fp32 "
        "stays the default")
    verifier_precision: Literal["auto", "fp32", "bf16"] = _f(
        "auto", "autocast of the step verifier's training forward: auto = bf16 where the machine multiplies bf16 "
        "natively, else fp32 (fp32 weights, loss and scoring either way; 1.29x faster per epoch than fp32 on 2 "
        "AVX512-BF16 cores, the loss after one epoch the same to 4 digits)")

    def __post_init__(self) -> None:
        for name in ("train_problems", "verifier_problems"):
            if getattr(self, name) < 8:
                raise ValueError(f"{name} must be >= 8, got {getattr(self, name)}")
        for name in ("eval_problems", "sweep_problems", "diagnose_problems", "best_of_n", "beam_width", "beam_samples",
                     "mcts_simulations", "mcts_children", "verifier_epochs", "verifier_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.train_epochs > 0:
            raise ValueError(f"train_epochs must be > 0, got {self.train_epochs}")
        for name in ("reference_problems", "token_head_problems"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.token_head_steps < 1:
            raise ValueError(f"token_head_steps must be >= 1, got {self.token_head_steps}")
        if (self.threshold is not None and not 0 <= self.threshold <= 1) or any(
                not 0 <= t <= 1 for t in (*self.thresholds, *self.diagnose_thresholds)):
            raise ValueError("thresholds must lie in [0, 1]")
        if not self.out:
            raise ValueError("out (the run folder) is required")
        for name in ("precision", "verifier_precision"):
            if getattr(self, name) not in ("auto", "fp32", "bf16"):
                raise ValueError(f"{name} must be auto, fp32 or bf16, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range, checked before any work
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")

    def resolved(self) -> DemoConfig:
        """The configuration actually run: ``quick`` replaces the sizes by smoke sizes."""
        if not self.quick:
            return self
        return dataclasses.replace(self, train_problems=400, train_epochs=1.0, max_train_steps=25,
                                   verifier_problems=12, reference_problems=24, verifier_epochs=3, eval_problems=6,
                                   token_head_problems=min(self.token_head_problems, 60), token_head_steps=20,
                                   sweep_problems=4, diagnose_problems=3, thresholds=(0.3, 0.7, 1.0),
                                   diagnose_thresholds=(0.3, 1.0), best_of_n=2, beam_width=2, beam_samples=2,
                                   mcts_simulations=4, mcts_children=2, example_trees=1)

    def fingerprint(self) -> str:
        d = dataclasses.asdict(self.resolved())
        for k in ("out", "overwrite"):
            d.pop(k)
        if d["verifier_heads"] == 1:  # the one-head default: runs made before the knob keep their fingerprint
            d.pop("verifier_heads")
        d["format_version"] = DEMO_FORMAT_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---- run folder bookkeeping --------------------------------------------------------------------

def _claim_folder(cfg: DemoConfig) -> Path:
    run = Path(cfg.out)
    cfg_path = run / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is corrupted ({e}); delete the folder or pass --overwrite") from e
        if old.get("fingerprint") != cfg.fingerprint():
            if not cfg.overwrite:
                changed = sorted(k for k, v in dataclasses.asdict(cfg.resolved()).items()
                                 if k not in ("out", "overwrite") and old.get("config", {}).get(k) != _jsonable(v))
                raise ValueError(
                    f"{run} holds a demo run of another configuration (differs in: {', '.join(changed) or 'version'}); "
                    "choose another --out, or pass --overwrite to start afresh"
                )
            shutil.rmtree(run)
    elif run.exists() and any(run.iterdir()):
        if not cfg.overwrite:
            raise ValueError(f"{run} exists and is not a demo run folder; choose another --out or pass --overwrite")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, {"format_version": DEMO_FORMAT_VERSION, "fingerprint": cfg.fingerprint(),
                                 "config": _jsonable(dataclasses.asdict(cfg.resolved()))})
    return run


def _jsonable(x):
    return json.loads(json.dumps(x))


def _done(run: Path, stage: str) -> dict | None:
    p = run / "stages" / f"{stage}.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None  # a torn marker means the stage did not finish


def _mark(run: Path, stage: str, info: dict) -> None:
    atomic_write_json(run / "stages" / f"{stage}.json", {"stage": stage, "finished": time.time(), **info})


def _call(stage: str, cfg: DemoConfig, run: Path) -> dict:
    return getattr(st, stage)(cfg, run) or {}


def _in_child(stage: str, cfg: DemoConfig, run: str, env: dict[str, str]) -> dict:
    os.environ.clear()  # the caller's environment now, not the fork server's from when it started
    os.environ.update(env)
    return _call(stage, cfg, Path(run))


def isolated(stage: str, cfg: DemoConfig, run: Path) -> dict:
    """``demo_stages.<stage>(cfg, run)`` in a fresh process forked from a clean fork server.

    Measured (2026-11-30, 2 idle cores): the diagnose stage took 131 s after the other stages in one
    process and 95 s on its own (solve 23.5 vs 19.8 s, sweep 12.1 vs 10.0 s); a stage in its own
    process also hands its memory back when it ends. Where there is no fork server (Windows), the
    stage runs in this process."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return _call(stage, cfg, run)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["experiments.studies.demo_stages"])
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(_in_child, stage, cfg, str(run), dict(os.environ)).result()
    except BrokenProcessPool as e:
        raise RuntimeError(f"the {stage} stage's process died (out of memory?); rerun `rewind demo` to resume "
                           "from the last finished stage") from e


def _stage(run: Path, name: str, fn, log) -> dict:
    info = _done(run, name)
    if info is not None:
        log(f"[{name}] done before, reused")
        return info
    log(f"[{name}] running")
    t0 = time.perf_counter()
    info = fn() or {}
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    _mark(run, name, info)
    log(f"[{name}] finished in {info['wall_s']:.0f}s")
    return info


# ---- the pipeline -------------------------------------------------------------------------------

def run_demo(config: DemoConfig, *, log=print) -> Path:
    """Run (or resume) the demo; returns the run folder."""
    cfg = config.resolved()
    run = _claim_folder(config)
    log(f"rewind demo → {run}  ({'quick' if config.quick else 'full'}; config {config.fingerprint()})")
    t0 = time.perf_counter()
    _stage(run, "policy", lambda: isolated("train_policy", cfg, run), log)
    _stage(run, "verifier", lambda: isolated("train_verifier", cfg, run), log)
    atomic_write_json(run / "run.json", {"policy": "train/policy", "verifier": "verifier_train/verifier"})
    _stage(run, "solve", lambda: isolated("solve", cfg, run), log)
    _stage(run, "sweep", lambda: isolated("sweep", cfg, run), log)
    _stage(run, "diagnose", lambda: isolated("diagnose", cfg, run), log)
    _stage(run, "report", lambda: st.report(cfg, run, log), log)
    set_default_run(run)
    log(f"done in {time.perf_counter() - t0:.0f}s; summary: {run / 'summary.md'}; this run is now the default "
        "for search.solve(problem) and `rewind solve`")
    return run
