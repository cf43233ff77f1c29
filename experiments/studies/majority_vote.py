"""Best-of-8 by majority vote for every policy of an ablation, beside its verifier-weighted vote.

``python -m experiments.studies.majority_vote --ablation runs/ablation17 --out DIR [--only MODE:SEED,...]``
takes every trained and evaluated cell of an ablation folder (``runs/<mode>-s<seed>``), draws
best-of-N on the ablation's held-out problems with the ablation's N, temperature and search knobs,
nothing pruned and the answer chosen by majority (no verifier), and compares it, paired on the
same (problem, seed), with ``clean``'s majority vote and with the same policy's verifier-weighted
best-of-N row of the ablation. The samples are seeded by the run seed and the chain, as in the
ablation, so the two votes count the same chains except the ones the weighted run pruned.

Rows go to ``DIR/results-<mode>-s<seed>.jsonl`` (one file per cell, so several processes can
split the cells with ``--only``; rows are reused on a rerun); the table to ``DIR/summary.md``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.inputs import load_problems
from experiments.studies.ablation import MODES, load_stage
from experiments.studies.evaluate import evaluate, read_results, write_summary
from experiments.studies.stats import format_p, mcnemar, wilson
from search.config import parse_knobs
from search.knobs import knob

INFERENCE = "best-of-n-majority"


@dataclass(frozen=True, kw_only=True)
class MajorityVoteConfig:
    ablation: str = knob(None, "an ablation folder (rewind ablation --out) with trained policies and results")
    out: str = knob(None, "where to write results-<mode>-s<seed>.jsonl and summary.md")
    only: str = knob("", "cells to draw, MODE:SEED comma-separated (default: every evaluated cell); "
                     "the summary always covers every cell with rows")
    batch_size: int = knob(64, "problems per search batch (>= 1)")

    def __post_init__(self) -> None:
        if not self.ablation or not self.out:
            raise ValueError("--ablation and --out are required")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _file(mode: str, seed: int) -> str:
    return f"results-{mode.replace('+', '_')}-s{seed}.jsonl"



def _versus(a: dict, b: dict) -> str:
    keys = a.keys() & b.keys()
    if not keys:
        return "–"
    t = mcnemar({k: a[k] for k in keys}, {k: b[k] for k in keys})
    return f"Δ {100 * sum(a[k] - b[k] for k in keys) / len(keys):+.1f}, {format_p(t.p_value)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, MajorityVoteConfig)
    cfg = config_from_args(ap.parse_args(argv), MajorityVoteConfig)
    abl = Path(cfg.ablation)
    if not (abl / "config.json").exists() or not (abl / "budgets.json").exists():
        raise ValueError(f"{abl} is not a calibrated ablation folder (no config.json / budgets.json)")
    conf = json.loads((abl / "config.json").read_text())
    conf = conf.get("config", conf)
    n = int(conf.get("n", 500))
    knobs = {**parse_knobs(conf.get("search_knobs") or ""),
             **json.loads((abl / "budgets.json").read_text())["best_of_n"], "vote": "majority"}
    problems = load_problems("builtin", n, seed=0, split="test")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weighted: dict[tuple[str, int], dict] = {}  # the ablation's verifier-weighted best-of-N, per cell
    for mode in MODES:
        for res in sorted(abl.glob(_file(mode, 0).replace("-s0", "-s*"))):
            seed = int(res.stem.rsplit("-s", 1)[1])
            rows = [r for r in read_results(res) if r.get("inference") == "best-of-n"]
            if len(rows) >= n:
                weighted[mode, seed] = {(seed, r["problem_id"]): bool(r["correct"]) for r in rows}
    wanted = [(m, int(s)) for m, s in (c.rsplit(":", 1) for c in cfg.only.split(",") if c)] or sorted(weighted)
    missing = [f"{m}:{s}" for m, s in wanted if (m, s) not in weighted]
    if missing:
        raise ValueError(f"cells not evaluated by the ablation: {', '.join(missing)}")
    for mode, seed in wanted:
        path = out / _file(mode, seed)
        if path.exists() and len(read_results(path)) >= n:
            continue  # drawn already
        policy, _ = load_stage(abl / "runs" / f"{mode.replace('+', '_')}-s{seed}")
        evaluate(problems, policy=policy, verifier=None, method="best_of_n", out=out / _file(mode, seed),
                 tag=f"{mode}|s{seed}|{INFERENCE}", threshold=1.0, seed=seed, batch_size=cfg.batch_size,
                 extra={"mode": mode, "seed": seed, "inference": INFERENCE}, **knobs)
    majority: dict[str, dict] = {}
    seeds: dict[str, list[int]] = {}
    for mode, seed in sorted(weighted):
        path = out / _file(mode, seed)
        rows = [r for r in read_results(path)] if path.exists() else []
        if len(rows) < n:
            continue
        majority.setdefault(mode, {}).update({(seed, r["problem_id"]): bool(r["correct"]) for r in rows})
        seeds.setdefault(mode, []).append(seed)
    lines = [f"Best-of-{knobs['n']} by majority vote (nothing pruned), {n} problems per seed; Δ paired on (problem, seed).",
             "", "| mode | seeds | majority | Δ vs clean's majority | weighted (ablation) | majority − weighted |",
             "|---|---|---|---|---|---|"]
    for mode in MODES:
        if mode not in majority:
            continue
        maj = majority[mode]
        w = {k: v for s in seeds[mode] for k, v in weighted[mode, s].items()}
        k = sum(maj.values())
        lo, hi = wilson(k, len(maj))
        vs_clean = "–" if mode == "clean" or "clean" not in majority else _versus(maj, majority["clean"])
        lines.append(f"| {mode} | {','.join(map(str, seeds[mode]))} | {100 * k / len(maj):.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {vs_clean} | {100 * sum(w.values()) / len(w):.1f}% | "
                     f"{_versus(maj, w)} |")
    return write_summary(out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
