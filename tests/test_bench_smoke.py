"""``rewind bench --smoke`` runs every benchmark row tiny, so the harness cannot rot: each group
is present, every number is finite, and the JSON and the Markdown table agree."""

from __future__ import annotations

import json
import math

import pytest

from experiments.bench.config import GROUPS, BenchConfig, Sizes, parse_only
from experiments.bench.scaling import line_fit
from experiments.bench.timing import check
from experiments.commands.cli import main


def test_smoke_run_has_every_row_with_finite_numbers(tmp_path, capsys):
    assert main(["bench", "--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    assert {r["id"][0] for r in rows} == set(GROUPS)
    expected = {"1a", "1b", "1c", "2a", "2b", "2c", "2d", "2e", "3a", "3b", "4a", "4b", "5a", "6a", "6b"}
    assert {r["id"] for r in rows} == expected
    for r in rows:
        assert math.isfinite(r["ours"]) and r["ours"] >= 0, r
        assert r["peer"] is None or (math.isfinite(r["peer"]) and r["peer"] > 0), r
        assert r["ratio"] is not None and math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert r["met"] == check(r["ratio"], r["target"]) or r["id"][0] == "2", r
    by_id = {r["id"]: r for r in rows}
    # with KV sharing every fed token of the tree runs through the model exactly once
    for rid in ("2c", "2d"):
        assert by_id[rid]["extra"]["tokens_run"] == by_id[rid]["extra"]["fed_tokens_in_tree"]
    # the re-encoding baseline runs strictly more tokens than sharing
    for rid in ("2a", "2b"):
        ex = by_id[rid]["extra"]
        assert ex["baseline_stats"]["tokens_run"] > ex["shared_stats"]["tokens_run"]
        assert ex["baseline_stats"]["nodes"] == ex["shared_stats"]["nodes"]
    table = (tmp_path / "bench.md").read_text()
    for rid in expected:
        assert f"| {rid} |" in table
    assert data["meta"]["torch"] and data["meta"]["cpu"]


def test_only_and_bad_input():
    assert parse_only("") == tuple(GROUPS)
    assert parse_only("kv,1,kv") == ("2", "1")
    with pytest.raises(ValueError, match="unknown benchmark row 'nope'"):
        parse_only("nope")
    with pytest.raises(ValueError, match="unknown benchmark row"):
        BenchConfig(only="9")
    with pytest.raises(ValueError, match="reps"):
        Sizes(reps=0)
    assert main(["bench", "--smoke", "--only", "zzz"]) == 2


def test_line_fit_recovers_a_line():
    fit = line_fit([1, 8, 64], [0.5 + 2 * x for x in (1, 8, 64)])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(0.5)
    assert line_fit([1, 2, 4], [3, 6, 12])["exponent"] == pytest.approx(1)


def test_train_throughput_puts_fp32_and_bf16_side_by_side(tmp_path):
    from experiments.bench import train_throughput

    assert train_throughput.main(["--out", str(tmp_path), "--steps", "1", "--warmup", "0", "--batch-size", "2",
                                  "--num-problems", "4", "--modes", "clean,hard", "--precision", "both"]) == 0
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert [(r["mode"], r["precision"]) for r in rows] == [("clean", "fp32"), ("hard", "fp32"), ("clean", "bf16"),
                                                          ("hard", "bf16")]
    assert all(r["tokens"] > 0 and math.isfinite(r["tokens_per_s"]) for r in rows)
    table = (tmp_path / "throughput.md").read_text()
    assert "| hard | bf16 |" in table and "× fp32" in table
    with pytest.raises(SystemExit):
        train_throughput.main(["--out", str(tmp_path), "--precision", "fp16"])


def test_verifier_epoch_bench_runs_every_variant_and_restores_the_path(tmp_path):
    from torch import nn

    from experiments.bench import verifier_epoch
    from verifier import step_head, step_train

    with verifier_epoch._before():  # the old path, inside the context only
        head = step_head.StepVerifier(8, width=8, layers=1, heads=2, dropout=0.1)
        assert type(head.encoder.layers[0].dropout1) is nn.Dropout and type(head.head[2]) is nn.Dropout
    assert isinstance(step_head.StepVerifier(8, width=8, layers=1, heads=2).head[2], step_head.UniformDropout)
    assert step_train.batch_of.__name__ == "batch_of"
    assert verifier_epoch.main(["--synthetic", "96", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "verifier_epoch.md").read_text()
    assert all(f"| {v} |" in table for v in ("before", "fp32", "bf16"))
    with pytest.raises((SystemExit, ValueError)):
        verifier_epoch.main(["--out", str(tmp_path)])  # neither a run nor synthetic steps


def test_side_jobs_bench_runs_both_arms(tmp_path):
    from experiments.bench import side_jobs

    assert side_jobs.main(["--run", "tiny", "--problems", "3", "--reference", "3", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "side_jobs.md").read_text()
    assert "| labels, side by side" in table and "| load, flat layout |" in table
    with pytest.raises((SystemExit, ValueError)):
        side_jobs.main(["--problems", "1", "--out", str(tmp_path)])
