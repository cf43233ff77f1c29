"""Verifier diagnostics against hand-computed values."""

import math

import numpy as np
import pytest

from verifier.metrics import (
    auprc,
    auroc,
    brier,
    diagnostics,
    ece,
    false_prune_rate,
    lead_time,
    reliability_bins,
)


def test_auroc_auprc_no_ties():
    # 3 of the 4 (pos, neg) pairs are ordered right: (0.35 < 0.4) is the one wrong pair.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # thresholds 0.8: P=1 R=.5; 0.4: P=.5 R=.5; 0.35: P=2/3 R=1 → AP = .5·1 + .5·2/3
    assert auprc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_auroc_auprc_ties():
    # pairs: (0.5>0.2)=1, (0.5=0.5)=½, (0.9>0.2)=1, (0.9>0.5)=1 → 3.5/4
    assert auroc([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(0.875)
    # the tie at 0.5 enters as one threshold: 0.9: P=1 R=.5; 0.5: P=2/3 R=1
    assert auprc([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert auroc([0.5] * 4, [0, 1, 0, 1]) == 0.5
    assert auprc([0.5] * 4, [0, 1, 0, 1]) == 0.5


def test_auroc_matches_pairwise_definition_on_random_data():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=60) / 4  # many ties
    y = rng.integers(0, 2, size=60)
    pos, neg = s[y == 1], s[y == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(s, y) == pytest.approx(pairwise)
    assert auroc(1 - s, y) == pytest.approx(1 - pairwise)


def test_calibration_numbers():
    s, y = [0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]
    # bin of 0.1: |0.5 - 0.1| · 2/4; bin of 0.9: |1 - 0.9| · 2/4
    assert ece(s, y) == pytest.approx(0.2 + 0.05)
    assert brier(s, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    bins = reliability_bins(s, y, n_bins=15)
    assert sum(bins["count"]) == 4 and bins["count"][1] == 2 and bins["count"][13] == 2
    assert math.isnan(bins["confidence"][0])
    assert reliability_bins([1.0], [1], n_bins=15)["count"][-1] == 1  # a score of 1 lands in the last bin


def test_false_prune_rate():
    s, y = [0.2, 0.4, 0.6, 0.95, 0.99], [0, 0, 0, 0, 1]
    assert false_prune_rate(s, y) == {"0.3": 0.75, "0.5": 0.5, "0.7": 0.25, "0.9": 0.25}


def test_lead_time():
    seq = [0] * 6 + [1] * 3 + [2] * 3
    pos = list(range(6)) + [0, 1, 2] + [0, 1, 2]
    y = [0, 0, 1, 1, 1, 0] + [0, 0, 0] + [0, 1, 1]
    s = [.1, .1, .2, .6, .8, .95] + [.9, .9, .9] + [.1, .95, .95]  # seq 0 crosses .9 only after its correction
    out = lead_time(s, y, seq, pos)
    assert out["0.5"] == {"median": 0.5, "never": 0.0, "n": 2}  # leads 1 and 0
    assert out["0.7"] == {"median": 1.0, "never": 0.0, "n": 2}  # leads 2 and 0
    assert out["0.9"] == {"median": 0.0, "never": 0.5, "n": 2}


def test_one_class_and_empty_are_clear_errors():
    with pytest.raises(ValueError, match="AUROC is undefined: all 3 labels are negative"):
        auroc([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="AUPRC is undefined: all 2 labels are positive"):
        auprc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="empty"):
        auroc([], [])
    with pytest.raises(ValueError, match="NaN"):
        brier([float("nan")], [1])
    d = diagnostics([0.1, 0.2], [0, 0])
    assert d["auroc"] is None and d["n_pos"] == 0 and d["brier"] == pytest.approx(0.025)
