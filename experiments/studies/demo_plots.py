"""The demo's plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from policy.atomic import atomic_save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_methods"]


def plot_methods(summary: list[dict], path: Path, labels: dict[str, str]) -> Path:
    """Accuracy per method with 95% CIs, and accuracy against tokens generated per problem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [labels.get(s["method"], s["method"]) for s in summary]
    acc = [100 * s["accuracy"] for s in summary]
    err = [[100 * (s["accuracy"] - s["ci95"][0]) for s in summary], [100 * (s["ci95"][1] - s["accuracy"]) for s in summary]]
    a.bar(range(len(summary)), acc, yerr=err, capsize=4, color="#4c72b0")
    a.set_xticks(range(len(summary)), names, rotation=20, ha="right")
    a.set_ylabel("accuracy (%)")
    a.set_title("held-out accuracy (95% Wilson CI)")
    for s, name in zip(summary, names):
        b.scatter(s["tokens_generated"], 100 * s["accuracy"], s=40)
        b.annotate(name, (s["tokens_generated"], 100 * s["accuracy"]), fontsize=8, xytext=(4, 4),
                   textcoords="offset points")
    b.set_xlabel("tokens generated per problem")
    b.set_ylabel("accuracy (%)")
    b.set_title("accuracy vs compute")
    fig.tight_layout()
    return atomic_save_figure(fig, path)
