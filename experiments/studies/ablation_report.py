"""The ablation's table, paired tests and plot, from the rows of ``results.jsonl``.

Accuracy of a cell (mode × inference) pools its training seeds. Its 95% CI is Wilson's with one
seed; with several it is a bootstrap over problems of the per-problem mean over seeds (the seeds
of one problem are not independent draws). Each cell is tested against the baseline row (the
first mode, ``clean`` by default) in the same column with McNemar's exact test on the
(problem, seed) pairs; the pruning-signal table tests verifier vs P(⟨b⟩) the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.studies.evaluate import read_results
from experiments.studies.plots import plot_bars
from experiments.studies.stats import bootstrap_ci, mcnemar, wilson
from policy.atomic import atomic_write_text

__all__ = ["Cell", "cells_of", "signal_lines", "table_lines", "write_report"]


class Cell:
    """The rows of one (mode, inference): correctness keyed by (problem_id, seed), and costs."""

    def __init__(self, rows: Sequence[Mapping]) -> None:
        self.correct = {(r["problem_id"], r["seed"]): bool(r["correct"]) for r in rows}
        self.seeds = sorted({r["seed"] for r in rows})
        self.tokens = float(np.mean([r["stats"]["tokens_generated"] for r in rows])) if rows else float("nan")
        self.per_seed = {s: float(np.mean([c for (_, s2), c in self.correct.items() if s2 == s])) for s in self.seeds}

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return float(np.mean(list(self.correct.values()))) if self.correct else float("nan")

    def ci(self) -> tuple[float, float]:
        if len(self.seeds) <= 1:
            return wilson(sum(self.correct.values()), self.n)
        by_problem: dict[str, list[bool]] = defaultdict(list)
        for (pid, _), c in self.correct.items():
            by_problem[pid].append(c)
        return bootstrap_ci([float(np.mean(v)) for v in by_problem.values()])


def cells_of(rows: Sequence[Mapping]) -> dict[tuple[str, str], Cell]:
    """Group result rows by (mode, inference)."""
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for r in rows:
        groups[r["mode"], r["inference"]].append(r)
    return {k: Cell(v) for k, v in groups.items()}


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def table_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str]) -> list[str]:
    """Accuracy [95% CI] per cell; below the baseline row: Δ and McNemar p vs the baseline."""
    base = modes[0]
    lines = ["| mode | " + " | ".join(inference) + " |", "|---" * (len(inference) + 1) + "|"]
    for mode in modes:
        out = []
        for inf in inference:
            cell = cells.get((mode, inf))
            if cell is None:
                out.append("–")
                continue
            lo, hi = cell.ci()
            text = f"{cell.accuracy:.3f} [{lo:.3f}, {hi:.3f}]"
            ref = cells.get((base, inf))
            if mode != base and ref is not None:
                t = mcnemar(cell.correct, ref.correct)
                text += f"<br>Δ {cell.accuracy - ref.accuracy:+.3f}, p={_p(t.p_value)} ({t.only_a}:{t.only_b})"
            out.append(text)
        lines.append(f"| {mode} | " + " | ".join(out) + " |")
    return lines


def signal_lines(cells: Mapping[tuple[str, str], Cell]) -> list[str]:
    """Verifier vs the policy's own P(⟨b⟩) as the pruning signal, where both were run."""
    lines = ["| mode | method | verifier | P(⟨b⟩) | Δ (verifier − P(⟨b⟩)) | McNemar p (only verifier:only P(⟨b⟩)) |",
             "|---|---|---|---|---|---|"]
    for (mode, inf), own in sorted(cells.items()):
        if "P(b)" not in inf:
            continue
        method = inf.split("+")[0]
        ver = cells.get((mode, f"{method}+verifier"))
        if ver is None:
            continue
        t = mcnemar(ver.correct, own.correct)
        lines.append(f"| {mode} | {method} | {ver.accuracy:.3f} | {own.accuracy:.3f} | "
                     f"{ver.accuracy - own.accuracy:+.3f} | {_p(t.p_value)} ({t.only_a}:{t.only_b}) |")
    return lines if len(lines) > 2 else []


def _cost_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str]) -> list[str]:
    lines = ["| mode | " + " | ".join(inference) + " |", "|---" * (len(inference) + 1) + "|"]
    for mode in modes:
        vals = [f"{cells[mode, i].tokens:.0f}" if (mode, i) in cells else "–" for i in inference]
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    return lines


def _seed_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str]) -> list[str]:
    lines = ["| mode | " + " | ".join(inference) + " |", "|---" * (len(inference) + 1) + "|"]
    for mode in modes:
        vals = [" / ".join(f"{a:.3f}" for a in cells[mode, i].per_seed.values()) if (mode, i) in cells else "–"
                for i in inference]
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    return lines


def write_report(out: Path, cfg: Any, budgets: Mapping, config_hash: str) -> str:
    """``ablation.md`` and ``ablation.png`` from the rows of this config; returns the Markdown."""
    rows = [r for r in read_results(out / "results.jsonl") if r.get("config_hash") == config_hash]
    cells = cells_of(rows)
    modes = [m for m in dict.fromkeys(str(cfg.modes).split(",")) if m]
    inference = list(dict.fromkeys(i for (_, i) in cells))
    n_problems = len({r["problem_id"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    sampled = ", ".join(f"{k}: {v}" for k, v in budgets.items() if k != "target_tokens")
    parts = [
        f"# Ablation: training modes × inference ({n_problems} held-out built-in problems, seeds {seeds})\n",
        f"config hash `{config_hash}`{' (smoke run: not a result)' if cfg.smoke else ''}; pruning threshold "
        f"{cfg.threshold}; baseline row: `{modes[0]}`.\n",
        "Accuracy [95% CI]; below the baseline row, Δ accuracy vs the baseline in the same column and McNemar's "
        "exact p on paired (problem, seed) correctness (only this row right : only the baseline right).\n",
        *table_lines(cells, modes, inference),
        f"\n## Token budgets\n\nTarget: best-of-N's mean {budgets.get('target_tokens', float('nan')):.0f} tokens "
        f"generated per problem on the calibration set; knobs: {sampled}. Achieved mean tokens generated per "
        "problem:\n",
        *_cost_lines(cells, modes, inference),
    ]
    sig = signal_lines(cells)
    if sig:
        parts += ["\n## Pruning signal: verifier vs the policy's own P(⟨b⟩)\n", *sig]
    if len(seeds) > 1:
        parts += ["\n## Accuracy per training seed\n", *_seed_lines(cells, modes, inference)]
    text = "\n".join(parts) + "\n\n![ablation](ablation.png)\n"
    atomic_write_text(out / "ablation.md", text)
    groups = {m: {i: (c.accuracy, *c.ci()) for (m2, i), c in cells.items() if m2 == m} for m in modes}
    plot_bars(groups, out / "ablation.png", title=f"accuracy by training mode and inference (n={n_problems})")
    return text
