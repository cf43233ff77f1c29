"""Plots shared by the experiments (matplotlib, Agg backend: no display needed).

A *series* is a label and a list of points ``(x, accuracy, low, high)``; ``low``/``high`` are the
confidence interval, drawn as a band (lines) or error bars (bars).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from policy.atomic import atomic_save_figure

__all__ = ["Point", "plot_accuracy_vs_threshold", "plot_accuracy_vs_tokens", "plot_bars"]

Point = tuple[float, float, float, float]  # (x, accuracy, ci_low, ci_high)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lines(series: Mapping[str, Sequence[Point]], path: str | os.PathLike, *, xlabel: str, title: str,
           logx: bool = False, styles: Mapping[str, str] | None = None) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in series.items():
        pts = sorted(points)
        if not pts:
            continue
        xs, ys, lo, hi = (list(v) for v in zip(*pts))
        style = (styles or {}).get(label, "-o")
        (line,) = ax.plot(xs, ys, style, label=label, markersize=4)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=120)


def plot_accuracy_vs_threshold(series: Mapping[str, Sequence[Point]], path: str | os.PathLike, *,
                               title: str = "accuracy vs pruning threshold") -> Path:
    """One line per series (e.g. ``live``, ``replay``) over thresholds, with 95% CI bands.
    Series whose label contains ``replay`` are dashed."""
    styles = {k: "--s" if "replay" in k else "-o" for k in series}
    return _lines(series, path, xlabel="threshold (prune if P(backtrack) ≥ τ)", title=title, styles=styles)


def plot_accuracy_vs_tokens(series: Mapping[str, Sequence[Point]], path: str | os.PathLike, *,
                            title: str = "accuracy vs tokens generated") -> Path:
    """One line per series over mean tokens generated per problem (log x), with 95% CI bands."""
    styles = {k: "--s" if "replay" in k else "-o" for k in series}
    return _lines(series, path, xlabel="mean tokens generated per problem", title=title, logx=True, styles=styles)


def plot_bars(groups: Mapping[str, Mapping[str, tuple[float, float, float]]], path: str | os.PathLike, *,
              title: str = "accuracy", ylabel: str = "accuracy") -> Path:
    """Grouped bars: ``groups[group][bar] = (value, ci_low, ci_high)``; one colour per bar name,
    error bars are the confidence intervals."""
    import numpy as np

    plt = _pyplot()
    names = list(dict.fromkeys(b for g in groups.values() for b in g))
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(groups) * max(1, len(names)) / 3), 4.4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for j, name in enumerate(names):
        vals = [groups[g].get(name, (np.nan, np.nan, np.nan)) for g in groups]
        ys = np.array([v[0] for v in vals])
        err = np.array([[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, ys, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(x, list(groups), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=120)
