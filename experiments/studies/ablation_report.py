"""The ablation's table, paired tests and plot, from the rows of ``results.jsonl``.

Accuracy of a cell (mode × inference) pools its training seeds. Its 95% CI is Wilson's with one
seed; with several it is a bootstrap over problems of the per-problem mean over seeds (the seeds
of one problem are not independent draws). Each cell is tested against the baseline row (the
first mode, ``clean`` by default) in the same column with McNemar's exact test on the
(problem, seed) pairs; the pruning-signal table tests verifier vs P(⟨b⟩) the same way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.studies.ablation_cells import results_files, run_dir
from experiments.studies.backtracks import EFFECT_KEYS, with_rates
from experiments.studies.evaluate import read_results
from experiments.studies.plots import plot_bars
from experiments.studies.stats import bootstrap_ci, mcnemar, wilson
from policy.atomic import atomic_write_text
from policy.plateau import best_eval

__all__ = ["CONTRASTS", "Cell", "cells_of", "contrast_lines", "mechanism_lines", "paired_delta", "read_rows", "signal_lines", "table_lines", "training_lines",
           "write_report"]


class Cell:
    """The rows of one (mode, inference): correctness keyed by (problem_id, seed), and costs."""

    def __init__(self, rows: Sequence[Mapping]) -> None:
        self.correct = {(r["problem_id"], r["seed"]): bool(r["correct"]) for r in rows}
        self.seeds = sorted({r["seed"] for r in rows})
        self.tokens = float(np.mean([r["stats"]["tokens_generated"] for r in rows])) if rows else float("nan")
        self.per_seed = {s: float(np.mean([c for (_, s2), c in self.correct.items() if s2 == s])) for s in self.seeds}
        self.per_seed_n = {s: sum(1 for (_, s2) in self.correct if s2 == s) for s in self.seeds}

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


def paired_delta(a: Mapping[object, bool], b: Mapping[object, bool]) -> tuple[float, int]:
    """Mean of ``a - b`` over the (problem, seed) keys both hold, and how many: a Δ between pooled
    accuracies would compare different seeds whenever one cell has seeds the other lacks."""
    keys = a.keys() & b.keys()
    return (float(np.mean([float(a[k]) - float(b[k]) for k in keys])) if keys else float("nan")), len(keys)


def _versus(a: Cell | None, b: Cell | None) -> tuple[Any, float, int] | None:
    """McNemar, paired Δ (a − b) and the number of shared (problem, seed) pairs; None when they share none."""
    if a is None or b is None or not a.correct.keys() & b.correct.keys():
        return None
    return mcnemar(a.correct, b.correct), *paired_delta(a.correct, b.correct)


def _partial(cell: Cell, expected: int | None) -> str:
    """'' for a cell whose every seed has all ``expected`` problems, else which seeds are short."""
    if not expected:
        return ""
    short = [f"seed {s}: {k}/{expected}" for s, k in cell.per_seed_n.items() if k < expected]
    return f"<br>(partial: {', '.join(short)})" if short else ""


def table_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str],
                expected: int | None = None) -> list[str]:
    """Accuracy [95% CI] per cell; below the baseline row: Δ and McNemar p vs the baseline, both on
    the (problem, seed) pairs the two cells share. ``expected``: problems per seed (marks partial cells)."""
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
            vs = _versus(cell, ref) if mode != base else None
            if vs is not None:
                t, delta, shared = vs
                text += f"<br>Δ {delta:+.3f}, p={_p(t.p_value)} ({t.only_a}:{t.only_b})"
                if shared < max(cell.n, ref.n):
                    text += f" on the {shared} shared"
            out.append(text + _partial(cell, expected))
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
        t, delta, _ = _versus(ver, own)
        lines.append(f"| {mode} | {method} | {ver.accuracy:.3f} | {own.accuracy:.3f} | "
                     f"{delta:+.3f} | {_p(t.p_value)} ({t.only_a}:{t.only_b}) |")
    return lines if len(lines) > 2 else []


# (A, B): the follow-ups against the control that differs from them only in their own ingredient, the
# controls against their bases (what the lower rate alone does) and against each other (hard vs clean data)
CONTRASTS = (("hard+onpolicy", "hard+cont"), ("hard+dpo", "hard+cont"), ("hard+cont", "hard"),
             ("clean+cont", "clean"), ("hard+cont", "clean+cont"))


def _paired_table(first: str, columns: Sequence[str],
                  rows: Sequence[tuple[str, Sequence[tuple[Cell | None, Cell | None]]]]) -> list[str]:
    """One row per (label, [(A, B) per column]): paired Δ (A − B), McNemar p, (only A : only B, pairs);
    rows with no comparable pair are left out, and so is a table without rows."""
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, pairs in rows:
        out = []
        for a, b in pairs:
            vs = _versus(a, b)
            if vs is None:
                out.append("–")
                continue
            t, delta, shared = vs
            out.append(f"Δ {delta:+.3f}, p={_p(t.p_value)} ({t.only_a}:{t.only_b}, n={shared})")
        if any(o != "–" for o in out):
            lines.append(f"| {label} | " + " | ".join(out) + " |")
    return lines if len(lines) > 2 and columns else []


def contrast_lines(cells: Mapping[tuple[str, str], Cell], inference: Sequence[str]) -> list[str]:
    """Paired Δ (A − B) and McNemar p of each ``CONTRASTS`` pair whose two modes were both evaluated."""
    return _paired_table("A vs B", inference, [(f"{a} vs {b}", [(cells.get((a, i)), cells.get((b, i))) for i in inference])
                                               for a, b in CONTRASTS])


def search_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str],
                 greedy: str = "greedy-rewind") -> list[str]:
    """Per mode, each sampling method against the same policy's ``greedy`` decoding: paired Δ and
    McNemar p on the (problem, seed) pairs both hold. Whether search pays is a within-mode question."""
    methods = [i for i in inference if not i.startswith("greedy")]
    return _paired_table("mode", [f"{i} − {greedy}" for i in methods],
                         [(m, [(cells.get((m, i)), cells.get((m, greedy))) for i in methods]) for m in modes])


def _cost_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str]) -> list[str]:
    lines = ["| mode | " + " | ".join(inference) + " |", "|---" * (len(inference) + 1) + "|"]
    for mode in modes:
        vals = [f"{cells[mode, i].tokens:.0f}" if (mode, i) in cells else "–" for i in inference]
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    return lines


def _spread(cell: Cell, ref: Cell | None) -> str:
    """One cell's accuracy per seed, their sd, and (vs the baseline) the range of its per-seed Δ."""
    accs = list(cell.per_seed.values())
    text = " / ".join(f"{a:.3f}" for a in accs)
    if len(accs) > 1:
        text += f" · sd {float(np.std(accs, ddof=1)):.3f}"
    shared = [s for s in cell.seeds if ref is not None and ref is not cell and s in ref.per_seed]
    if shared:
        deltas = [cell.per_seed[s] - ref.per_seed[s] for s in shared]
        text += f"<br>Δ per seed {min(deltas):+.3f} … {max(deltas):+.3f}"
    return text


def _seed_lines(cells: Mapping[tuple[str, str], Cell], modes: Sequence[str], inference: Sequence[str]) -> list[str]:
    """Per cell: accuracy of each training seed, their sd, and the range of the per-seed Δ vs the baseline."""
    lines = ["| mode | " + " | ".join(inference) + " |", "|---" * (len(inference) + 1) + "|"]
    for mode in modes:
        vals = [_spread(cells[mode, i], cells.get((modes[0], i))) if (mode, i) in cells else "–" for i in inference]
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    return lines


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _verifier_cells(folder: Path) -> str:
    """``| sibling AUROC: verifier / log-prob (pairs) | τ |`` of a cell's step verifier, from its metrics."""
    path = folder / "verifier_run" / "metrics.json"
    if not path.exists():
        return " – | – |"
    v = json.loads(path.read_text())
    rankers = v.get("test", {}).get("rankers", {})
    ver, lp = (rankers.get(k, {}).get("sibling_auroc") for k in ("verifier", "step logprob"))
    return (f" {_num(ver, '.3f')} / {_num(lp, '.3f')} ({_num(v.get('test', {}).get('sibling_pairs'), 'd')}) | "
            f"{_num(v.get('default_threshold'), 'g')} |")


def training_lines(out: Path, modes: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """Per (mode, seed): the policy's optimiser steps, whether the plateau rule stopped it, best and final
    eval loss, tokens trained on and wall time (its ``metrics.json``); its verifier's held-out sibling
    AUROC next to step log-prob's, and the verifier's calibrated pruning threshold."""
    lines = ["| mode | seed | steps | stopped early | best eval loss (step) | final eval loss | train tokens | "
             "train min | verifier sibling AUROC / log-prob (pairs) | τ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for seed in seeds:
            path = run_dir(out, mode, seed) / "policy_run" / "metrics.json"
            if not path.exists():
                lines.append(f"| {mode} | {seed} | not trained | – | – | – | – | – | – | – |")
                continue
            m = json.loads(path.read_text())
            best = (m.get("best_eval_loss"), m.get("best_eval_step"))
            if best[0] is None:
                best = best_eval(m.get("log_history", []))
            stopped = {True: f"yes (step {m.get('plateau_step')})", False: "no (cap)", None: "–"}[m.get("stopped_early")]
            runtime = m.get("train_runtime")
            lines.append(f"| {mode} | {seed} | {m.get('global_step', '–')} | {stopped} | "
                         f"{_num(best[0], '.4f')} ({_num(best[1], 'd')}) | {_num(m.get('eval_loss'), '.4f')} | "
                         f"{_num(m.get('train_tokens'), ',d')} | {_num(runtime and runtime / 60, '.1f')} |"
                         + _verifier_cells(run_dir(out, mode, seed)))
    return lines


def _accuracy(rows: Sequence[Mapping]) -> str:
    return f"{float(np.mean([r['correct'] for r in rows])):.3f}" if rows else "–"


def _share(k: int, n: int) -> str:
    return f"{k / n:.1%} ({k})" if n else "–"


def mechanism_lines(rows: Sequence[Mapping], modes: Sequence[str], inference: str = "greedy-rewind") -> list[str]:
    """What the policy's own ⟨b⟩-runs do under greedy rewind decoding, per mode (seeds pooled): how often
    a solution holds one, whether a run deletes an error of its own (vs right text: harm), and whether
    the line after the run is then right (fix; ``experiments.studies.backtracks``)."""
    lines = ["| mode | problems | with a ⟨b⟩-run | accuracy with / without | ⟨b⟩-runs | on its own error | "
             "deletes right text | correction right (of those on an error) |", "|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode and r["inference"] == inference]
        if not mine:
            continue
        with_b = [r for r in mine if r["stats"].get("runs", 0) > 0]
        without = [r for r in mine if r["stats"].get("runs", 0) == 0]
        known = [r["stats"]["b_effects"] for r in mine if "b_effects" in r["stats"]]  # rows older than it lack it
        eff = with_rates({k: sum(e[k] for e in known) for k in EFFECT_KEYS})
        on_error = eff["fix"] + eff["other"]
        lines.append(f"| {mode} | {len(mine)} | {len(with_b) / len(mine):.1%} | {_accuracy(with_b)} / "
                     f"{_accuracy(without)} | {sum(r['stats'].get('runs', 0) for r in mine)} | "
                     f"{_share(on_error, eff['runs'])} | {_share(eff['harm'], eff['runs'])} | "
                     f"{_share(eff['fix'], on_error)} |")
    return lines if len(lines) > 2 else []


def read_rows(out: Path, config_hash: str) -> list[dict]:
    """The rows of this config from every results file of the ablation folder (per-cell files and an
    older single ``results.jsonl``), one per (tag, problem)."""
    rows: dict[tuple[str, str], dict] = {}
    for path in results_files(out):
        for r in read_results(path):
            if r.get("config_hash") == config_hash:
                rows.setdefault((str(r.get("tag")), str(r.get("problem_id"))), r)
    return list(rows.values())


def write_report(out: Path, cfg: Any, budgets: Mapping, config_hash: str) -> str:
    """``ablation.md`` and ``ablation.png`` from the rows of this config; returns the Markdown."""
    rows = read_rows(out, config_hash)
    cells = cells_of(rows)
    modes = [m for m in dict.fromkeys(str(cfg.modes).split(",")) if m]
    inference = list(dict.fromkeys(i for (_, i) in cells))
    n_problems = len({r["problem_id"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    sampled = ", ".join(f"{k}: {v}" for k, v in budgets.items() if k != "target_tokens")
    parts = [
        f"# Ablation: training modes × inference ({n_problems} held-out built-in problems, seeds {seeds})\n",
        f"config hash `{config_hash}`{' (smoke run: not a result)' if cfg.smoke else ''}; pruning threshold "
        f"{cfg.threshold if cfg.threshold is not None else 'each verifier’s calibrated one (0.5 for P(⟨b⟩))'}; baseline row: `{modes[0]}`.\n",
        "Accuracy [95% CI]; below the baseline row, Δ accuracy vs the baseline in the same column and McNemar's "
        "exact p, both on the (problem, seed) pairs the two cells share ('on the N shared' when that is fewer "
        "than either cell holds) (only this row right : only the baseline right).\n",
        *table_lines(cells, modes, inference, expected=int(cfg.n)),
        f"\n## Token budgets\n\nTarget: best-of-N's mean {budgets.get('target_tokens', float('nan')):.0f} tokens "
        f"generated per problem on the calibration set; knobs: {sampled}. Achieved mean tokens generated per "
        "problem:\n",
        *_cost_lines(cells, modes, inference),
        *_training_part(out, cfg),
    ]
    contrasts = contrast_lines(cells, inference)
    if contrasts:
        parts += ["\n## Follow-ups against their controls\n\nThe `+cont` controls continue `hard` / `clean` on "
                  "their own data at the on-policy round's learning rate: a follow-up's gain over `hard+cont` is its "
                  "own, a control's gain over its base is the lower rate's. Δ (A − B) and McNemar's exact p on the "
                  "(problem, seed) pairs both hold (only A right : only B right, pairs).\n", *contrasts]
    searched = search_lines(cells, modes, inference)
    if searched:
        parts += ["\n## Search against greedy decoding of the same policy\n\nΔ (method − greedy rewind) and McNemar's "
                  "exact p on the (problem, seed) pairs both hold (only the method right : only greedy right, pairs).\n",
                  *searched]
    sig = signal_lines(cells)
    if sig:
        parts += ["\n## Pruning signal: verifier vs the policy's own P(⟨b⟩)\n", *sig]
    if len(seeds) > 1:
        parts += ["\n## Accuracy per training seed\n\nEach seed's accuracy (its own policy and verifier) and "
                  "their sd; below the baseline row, the smallest and largest per-seed Δ vs the baseline.\n",
                  *_seed_lines(cells, modes, inference)]
    mech = mechanism_lines(rows, modes)
    if mech:
        parts += ["\n## Mechanism: the policy's own ⟨b⟩-runs under greedy rewind decoding\n\nSeeds pooled. A run "
                  "is *on its own error* when the text it deletes holds a wrong step, else it *deletes right text*; "
                  "the *correction is right* when the line it ends in is right afterwards.\n", *mech]
    text = "\n".join(parts) + "\n\n![ablation](ablation.png)\n"
    atomic_write_text(out / "ablation.md", text)
    groups = {m: {i: (c.accuracy, *c.ci()) for (m2, i), c in cells.items() if m2 == m} for m in modes}
    plot_bars(groups, out / "ablation.png", title=f"accuracy by training mode and inference (n={n_problems})")
    return text


def _training_part(out: Path, cfg: Any) -> list[str]:
    seeds = [int(s) for s in str(cfg.seeds).split(",") if s.strip()]
    modes = [m for m in dict.fromkeys(str(cfg.modes).split(",")) if m]
    evals = f"{cfg.plateau_patience} eval{'s' if cfg.plateau_patience != 1 else ''}"
    rule = (f"stops after {evals} in a row (every {cfg.eval_steps} steps) without a "
            f"{cfg.plateau_delta:.0%} relative improvement of the eval loss, at most {cfg.max_steps} steps"
            if cfg.plateau_patience else f"trains {cfg.max_steps} steps (no plateau rule)")
    return [f"\n## Training\n\nPolicy: {policy_text(cfg)}. One rule for every mode: a policy {rule}; learning-rate "
            f"schedule `{cfg.lr_scheduler}`. Train tokens: every token fed, padding included.\n",
            *training_lines(out, modes, seeds)]


def policy_text(cfg: Any) -> str:
    """What every mode trains: the tiny policy from scratch, or a pretrained model (LoRA or all weights)."""
    model, rank, lr = getattr(cfg, "model", "tiny"), getattr(cfg, "lora_r", 0), getattr(cfg, "lr", None)
    rate = f"learning rate {lr:g}" if lr is not None else "the model's default learning rate"
    if {"hard+dpo", "hard+onpolicy"} & set(str(getattr(cfg, "modes", "")).split(",")):
        rate += " (hard+dpo at 1/6 of it, hard+onpolicy at 1/3)"
    if model == "tiny":
        return f"the built-in tiny policy, trained from scratch at {rate}"
    how = f"LoRA rank {rank} (merged into the base after training)" if rank else "all weights trained"
    return f"`{model}`, {how}, at {rate}"
