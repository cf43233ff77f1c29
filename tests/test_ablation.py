"""Ablation statistics on known inputs, config validation, and the smoke run end to end (slow)."""

from __future__ import annotations

import json

import pytest

from experiments.studies.ablation import AblationConfig, run_ablation
from experiments.studies.ablation_report import Cell, cells_of, signal_lines, table_lines
from experiments.studies.stats import bootstrap_ci, mcnemar, wilson


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_mcnemar_exact_binomial():
    # b = 8 discordant pairs only A got right, c = 2 only B: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56 / 1024
    a = {i: i < 8 or i >= 10 for i in range(20)}
    b = {i: 8 <= i for i in range(20)}
    t = mcnemar(a, b)
    assert (t.n, t.only_a, t.only_b) == (20, 8, 2)
    assert t.p_value == pytest.approx(112 / 1024)
    assert mcnemar({1: True, 2: False}, {1: True, 2: False, 3: True}).p_value == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="share no problem"):
        mcnemar({1: True}, {2: True})


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([0.0, 1.0] * 200)
    assert lo < 0.5 < hi and hi - lo < 0.15
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([0, 1, 1, 0, 1], seed=3) == bootstrap_ci([0, 1, 1, 0, 1], seed=3)


def _rows(mode, inference, correct_by_seed, tokens=10):
    return [{"mode": mode, "inference": inference, "problem_id": f"p{i}", "seed": seed, "correct": c,
             "stats": {"tokens_generated": tokens}}
            for seed, cs in correct_by_seed.items() for i, c in enumerate(cs)]


def test_table_and_signal_lines_on_known_rows():
    rows = (_rows("clean", "beam+verifier", {0: [0, 0, 1, 0]})
            + _rows("hard", "beam+verifier", {0: [1, 1, 1, 0]})
            + _rows("hard", "beam+P(b)", {0: [1, 0, 1, 0]}))
    cells = cells_of(rows)
    assert cells["hard", "beam+verifier"].accuracy == 0.75 and cells["clean", "beam+verifier"].n == 4
    text = "\n".join(table_lines(cells, ["clean", "hard"], ["beam+verifier"]))
    assert "0.250 [" in text and "Δ +0.500, p=0.500 (2:0)" in text  # 2 discordant, both for hard: p = 2/4
    sig = "\n".join(signal_lines(cells))
    assert "| hard | beam | 0.750 | 0.500 | +0.250 | 1.000 (1:0) |" in sig


def test_cell_pools_seeds_and_bootstraps_over_problems():
    cell = Cell(_rows("hard", "mcts+verifier", {0: [1, 1, 0, 0], 1: [1, 0, 0, 0]}))
    assert cell.n == 8 and cell.accuracy == 3 / 8 and cell.per_seed == {0: 0.5, 1: 0.25}
    lo, hi = cell.ci()
    assert 0 <= lo < 3 / 8 < hi <= 1


def test_config_validation():
    with pytest.raises(ValueError, match="unknown training mode"):
        AblationConfig(out="x", modes="clean,hardd")
    with pytest.raises(ValueError, match="include 'hard'"):
        AblationConfig(out="x", modes="clean,hard+dpo", signal_modes="")
    with pytest.raises(ValueError, match="unknown inference"):
        AblationConfig(out="x", inference="beam")
    with pytest.raises(ValueError, match="seeds"):
        AblationConfig(out="x", seeds="0,a")
    cfg = AblationConfig(out="x", smoke=True).effective()
    assert cfg.n == 8 and cfg.seeds == "0"
    assert len(cfg.cells) == 6 * 5 + 2  # every mode x method, plus the P(b) signal for hard


def test_help_documents_the_command(capsys):
    from experiments.commands.cli import main

    with pytest.raises(SystemExit):
        main(["ablation", "--help"])
    text = capsys.readouterr().out
    assert "--smoke" in text and "rewind ablation --out" in text and "--seeds" in text


@pytest.mark.slow
def test_smoke_ablation_end_to_end(tmp_path):
    out = tmp_path / "ab"
    text = run_ablation(AblationConfig(out=str(out), smoke=True), progress=False)
    for mode in ("clean", "naive", "masked", "hard", "hard+dpo", "hard+onpolicy"):
        assert f"| {mode} |" in text
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 * (6 * 5 + 2) and len({r["config_hash"] for r in rows}) == 1
    assert (out / "ablation.png").stat().st_size > 1000 and (out / "budgets.json").exists()
    assert run_ablation(AblationConfig(out=str(out), smoke=True), progress=False) == text  # all reused
    with pytest.raises(ValueError, match="another config"):
        run_ablation(AblationConfig(out=str(out), smoke=True, threshold=0.3), progress=False)
