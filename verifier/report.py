"""Held-out report of a verifier head against the policy's own P(⟨b⟩), per label source and level.

``evaluate`` returns ``{source: {level: {"head": diagnostics, "policy_p_backtrack": diagnostics}}}``
with level ``token`` (every labelled prefix) and ``step`` (prefixes ending a step, where search
scores nodes); ``source`` also has ``all``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from verifier.features import Features
from verifier.head import VerifierHead
from verifier.metrics import diagnostics
from verifier.plots import reliability_diagram

__all__ = ["BASELINE", "evaluate", "summary_table", "write_plots"]

BASELINE = "policy_p_backtrack"


def _diag(scores: torch.Tensor, feats: Features) -> dict:
    return diagnostics(scores.numpy(), feats.labels.numpy(), feats.sequence.numpy(), feats.position.numpy())


def evaluate(head: VerifierHead, feats: Features) -> dict:
    """Diagnostics of ``head`` and of the baseline on ``feats`` (sources with no rows are left out)."""
    if len(feats) == 0:
        raise ValueError("no held-out positions to evaluate the verifier on: the test label set is empty")
    scores = head.score(feats.hidden)
    out: dict = {}
    for source in ["all", *sorted(set(feats.sources))]:
        rows = feats.rows_of(source=None if source == "all" else source)
        levels = {}
        for level, mask in (("token", rows), ("step", rows & feats.step_end)):
            if not bool(mask.any()):
                continue
            sub = feats.select(mask)
            levels[level] = {"head": _diag(scores[mask], sub), BASELINE: _diag(sub.p_backtrack, sub)}
        if levels:
            out[source] = levels
    return out


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def summary_table(report: dict) -> str:
    """A Markdown table: AUROC / AUPRC / ECE / Brier of the head and of P(⟨b⟩) per source and level."""
    lines = ["| source | level | n (pos) | AUROC head | AUROC P(⟨b⟩) | AUPRC head | AUPRC P(⟨b⟩) | ECE head | Brier head |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for source, levels in report.items():
        for level, d in levels.items():
            h, b = d["head"], d[BASELINE]
            lines.append(f"| {source} | {level} | {h['n']} ({h['n_pos']}) | {_fmt(h['auroc'])} | {_fmt(b['auroc'])} | "
                         f"{_fmt(h['auprc'])} | {_fmt(b['auprc'])} | {_fmt(h['ece'])} | {_fmt(h['brier'])} |")
    return "\n".join(lines)


def write_plots(report: dict, out: str | Path) -> list[Path]:
    """One reliability diagram per source (token level, head and baseline): ``reliability_<source>.png``."""
    paths = []
    for source, levels in report.items():
        if "token" not in levels:
            continue
        d = levels["token"]
        curves = {"verifier head": d["head"]["bins"], "policy P(⟨b⟩)": d[BASELINE]["bins"]}
        paths.append(reliability_diagram(curves, Path(out) / f"reliability_{source}.png",
                                         title=f"Reliability on held-out {source} prefixes"))
    return paths
