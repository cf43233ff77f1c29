"""Diagnostics of a P(backtrack) score against prefix labels (DESIGN §4), in numpy.

All functions take ``scores [N]`` in [0, 1] and ``labels [N]``; labels are 0/1 (soft labels are
binarized at 0.5 where a ranking metric needs classes). AUROC and AUPRC are rank-based with ties
handled (tied scores share their average rank / count as one threshold), so a constant score has
AUROC exactly 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "THRESHOLDS",
    "auprc",
    "auroc",
    "brier",
    "diagnostics",
    "ece",
    "false_prune_rate",
    "lead_time",
    "reliability_bins",
]

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if s.size == 0:
        raise ValueError("no labelled positions: the label set is empty")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN/inf")
    if not np.isfinite(y).all() or (y < 0).any() or (y > 1).any():
        raise ValueError("labels must be in [0, 1] (drop ignored positions, label -1, first)")
    return s, y


def _classes(scores, labels, metric: str) -> tuple[np.ndarray, np.ndarray]:
    s, y = _arrays(scores, labels)
    y = (y >= 0.5).astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        which = "positive" if n_pos else "negative"
        raise ValueError(f"{metric} is undefined: all {y.size} labels are {which} (it needs both classes)")
    return s, y


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` with ties given their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2.0  # mean of ranks a+1 .. b
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2
    (the Mann-Whitney U statistic over n_pos·n_neg)."""
    s, y = _classes(scores, labels, "AUROC")
    ranks = _average_ranks(s)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auprc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Average precision: Σ_k (R_k − R_{k−1}) · P_k over the distinct score thresholds, highest
    first; tied scores enter together as one threshold."""
    s, y = _classes(scores, labels, "AUPRC")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    k = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    precision = tp / k
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def reliability_bins(scores: Sequence[float], labels: Sequence[float], n_bins: int = 15) -> dict:
    """Equal-width bins on [0, 1]: per bin ``count``, mean ``confidence`` and mean ``accuracy``
    (the positive rate; soft labels are averaged). Empty bins have NaN means."""
    s, y = _arrays(scores, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)  # a score of 1.0 goes to the last bin
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=s, minlength=n_bins) / count
        acc = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1).tolist(), "count": count.astype(int).tolist(),
            "confidence": conf.tolist(), "accuracy": acc.tolist()}


def ece(scores: Sequence[float], labels: Sequence[float], n_bins: int = 15) -> float:
    """Expected calibration error: Σ_bins (n_b / N) · |accuracy_b − confidence_b| over equal-width bins."""
    bins = reliability_bins(scores, labels, n_bins)
    n = np.asarray(bins["count"], dtype=np.float64)
    gap = np.abs(np.nan_to_num(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"])))
    return float((n * gap).sum() / n.sum())


def brier(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Mean squared error between the probability and the (soft) label."""
    s, y = _arrays(scores, labels)
    return float(np.mean((s - y) ** 2))


def false_prune_rate(scores: Sequence[float], labels: Sequence[float],
                     thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float | None]:
    """Share of prefixes of correct solutions (label < 0.5) that a threshold would prune (score ≥ τ).
    ``None`` per threshold when there is no such prefix."""
    s, y = _arrays(scores, labels)
    neg = s[y < 0.5]
    return {f"{t:g}": (float(np.mean(neg >= t)) if neg.size else None) for t in thresholds}


def lead_time(scores: Sequence[float], labels: Sequence[float], sequence: Sequence[int], position: Sequence[int],
              thresholds: Sequence[float] = THRESHOLDS) -> dict[str, dict]:
    """Detection lead time per threshold τ, over sequences that hold an error.

    In each sequence (positions sorted) the error region starts at the first positive position
    ``f`` and lasts while labels stay positive (it ends at the correction). Lead time = raw
    tokens from ``f`` to the first position in the region whose score ≥ τ. Returns per τ the
    ``median`` lead (None if no sequence crossed), ``never`` (share of sequences whose score
    never crossed inside the region) and ``n`` (sequences with an error).
    """
    s, y = _arrays(scores, labels)
    seq = np.asarray(sequence).reshape(-1)
    pos = np.asarray(position).reshape(-1)
    if seq.shape != s.shape or pos.shape != s.shape:
        raise ValueError("sequence and position must give one entry per score")
    regions = []
    order = np.lexsort((pos, seq))
    s, y, seq, pos = s[order], y[order], seq[order], pos[order]
    bounds = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        positive = y[a:b] >= 0.5
        if not positive.any():
            continue
        f = a + int(np.argmax(positive))
        end = f
        while end < b and y[end] >= 0.5:
            end += 1
        regions.append((pos[f], pos[f:end], s[f:end]))
    out = {}
    for t in thresholds:
        leads, never = [], 0
        for start, p, sc in regions:
            hit = np.flatnonzero(sc >= t)
            if hit.size:
                leads.append(int(p[hit[0]] - start))
            else:
                never += 1
        out[f"{t:g}"] = {"median": float(np.median(leads)) if leads else None,
                         "never": (never / len(regions)) if regions else None, "n": len(regions)}
    return out


def diagnostics(scores: Sequence[float], labels: Sequence[float], sequence: Sequence[int] | None = None,
                position: Sequence[int] | None = None, *, thresholds: Sequence[float] = THRESHOLDS,
                n_bins: int = 15) -> dict:
    """Every number of DESIGN §4 for one score: ``auroc``, ``auprc``, ``ece``, ``brier``,
    ``false_prune`` (per τ), ``lead_time`` (per τ; with ``sequence``/``position``), ``n``, ``n_pos``
    and the reliability ``bins``. AUROC/AUPRC are None when the labels hold one class only."""
    s, y = _arrays(scores, labels)
    out: dict = {"n": int(s.size), "n_pos": int((y >= 0.5).sum())}
    for name, fn in (("auroc", auroc), ("auprc", auprc)):
        try:
            out[name] = fn(s, y)
        except ValueError:
            out[name] = None
    out["ece"] = ece(s, y, n_bins)
    out["brier"] = brier(s, y)
    out["false_prune"] = false_prune_rate(s, y, thresholds)
    if sequence is not None and position is not None:
        out["lead_time"] = lead_time(s, y, sequence, position, thresholds)
    out["bins"] = reliability_bins(s, y, n_bins)
    return out
