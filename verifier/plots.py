"""The reliability diagram of the verifier and its baseline (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import os
from pathlib import Path

from policy.atomic import atomic_save_figure

__all__ = ["reliability_diagram"]


def reliability_diagram(curves: dict[str, dict], path: str | os.PathLike, *, title: str = "Reliability") -> Path:
    """Plot accuracy against confidence per bin for each named score (``metrics.reliability_bins``
    output), with the diagonal of perfect calibration and the share of positions per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    for name, bins in curves.items():
        edges = bins["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        pts = [(c, a) for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
        total = max(1, sum(bins["count"]))
        ax_n.step(centers, [n / total for n in bins["count"]], where="mid", label=name)
    ax.set_ylabel("positive rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax_n.set_xlabel("P(backtrack)")
    ax_n.set_ylabel("share")
    ax_n.set_yscale("log")
    fig.tight_layout()
    return atomic_save_figure(fig, path)
