"""Statistics for accuracy tables: confidence intervals and paired tests on per-problem correctness.

- ``wilson``: the Wilson score interval of a binomial proportion (Wilson 1927); better than the
  normal interval at small n and near 0 or 1.
- ``bootstrap_ci``: percentile bootstrap of the mean of per-problem values (e.g. accuracy pooled
  over seeds, where problems repeat).
- ``mcnemar``: McNemar's exact test on paired correctness: under H0 the discordant pairs
  (b = only A right, c = only B right) split Binomial(b + c, 1/2); two-sided p from scipy's
  ``binomtest``. Pairs are matched by key (problem id, and seed when pooled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["McNemar", "bootstrap_ci", "fmt", "format_p", "mcnemar", "summarize", "wilson"]


def wilson(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """``(low, high)`` of the Wilson score interval (95% by default) for ``successes`` of ``n``."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval holds p; rounding can put an end a hair past it (wilson(0, 3) gave a low of 5.6e-17,
    # a negative error bar that matplotlib refuses)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)``; seeded, so a table is reproducible."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of A vs B on ``n`` paired problems."""

    n: int  # pairs (keys present in both)
    only_a: int  # b: A right, B wrong
    only_b: int  # c: A wrong, B right
    p_value: float  # two-sided exact binomial p; 1.0 with no discordant pair


def mcnemar(a: Mapping[object, bool], b: Mapping[object, bool]) -> McNemar:
    """Exact McNemar test on the keys ``a`` and ``b`` share (key -> correct)."""
    from scipy.stats import binomtest

    keys = a.keys() & b.keys()
    if not keys:
        raise ValueError("mcnemar: the two results share no problem")
    only_a = sum(1 for k in keys if a[k] and not b[k])
    only_b = sum(1 for k in keys if b[k] and not a[k])
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue)
    return McNemar(n=len(keys), only_a=only_a, only_b=only_b, p_value=min(1.0, p))


def summarize(rows: Sequence[Mapping]) -> dict:
    """Accuracy with its Wilson 95% CI and mean costs (from ``row["stats"]``) of result rows."""
    n = len(rows)
    k = sum(1 for r in rows if r.get("correct"))
    lo, hi = wilson(k, n)

    def mean(key: str) -> float | None:
        vals = [r["stats"][key] for r in rows if isinstance(r.get("stats"), Mapping) and r["stats"].get(key) is not None]
        return float(np.mean(vals)) if vals else None

    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci_low": lo, "ci_high": hi,
            **{key: mean(key) for key in ("tokens_generated", "tokens_run", "nodes_expanded", "nodes_pruned",
                                          "wall_s")}}


def fmt(x: float | None, digits: int = 1) -> str:
    """A table cell: ``–`` for a missing value."""
    return "–" if x is None else f"{x:.{digits}f}"


def format_p(p: float) -> str:
    """A p-value as the study tables print it: ``p < 0.001``, three decimals below 0.01, else two."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
