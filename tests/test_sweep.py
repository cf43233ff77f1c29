"""``rewind sweep``: live and replayed rows per threshold; replay equals live where exact; resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.commands.cli import main
from experiments.studies.evaluate import read_results
from experiments.studies.shard import rank_path
from experiments.studies.threshold_sweep import parse_thresholds
from policy import tiny_policy
from verifier import VerifierHead

KNOBS = "width=2,samples=2,max_depth=3,max_step_tokens=10"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder: a random tiny policy and a random verifier head (scores spread around 0.5)."""
    import torch

    run = tmp_path_factory.mktemp("sweep") / "run"
    policy = tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    policy.save(run / "policy")
    torch.manual_seed(0)
    head = VerifierHead(32, width=8)
    with torch.no_grad():
        head.net[-1].weight.mul_(20.0)  # spread the scores so thresholds near 0.5 prune some steps
    head.save(run / "verifier")
    return run


def _sweep(run_dir: Path, out: Path, *extra: str) -> int:
    return main(["sweep", "--run", str(run_dir), "--strategy", "beam", "--thresholds", "0.45,0.55", "--n", "3",
                 "--knobs", KNOBS, "--out", str(out), *extra])


def test_sweep_live_and_replay_rows_agree_where_exact(run_dir, tmp_path):
    out = tmp_path / "sweep"
    assert _sweep(run_dir, out) == 0
    rows = read_results(out / "results.jsonl")
    tags = {(r["source"], r["threshold"]) for r in rows}
    assert tags == {(s, t) for s in ("live", "replay") for t in (0.45, 0.55, 1.0)}
    assert len(rows) == 18 and len({(r["tag"], r["problem_id"]) for r in rows}) == 18
    live = {(r["threshold"], r["problem_id"]): r for r in rows if r["source"] == "live"}
    replays = [r for r in rows if r["source"] == "replay"]
    assert all(r["exact"] for r in replays if r["threshold"] == 1.0)  # the recorded run replays itself
    exact = [r for r in replays if r["exact"]]
    assert exact
    for r in exact:  # DESIGN §5: the replay is exact => it reaches the live run's outcome and cost
        twin = live[r["threshold"], r["problem_id"]]
        assert r["answer"] == twin["answer"]
        for key in ("tokens_generated", "nodes_expanded", "nodes_pruned"):
            assert r["stats"][key] == twin["stats"][key], (key, r["threshold"])
    assert sum(r["stats"]["nodes_pruned"] for r in live.values()) > 0  # the thresholds do prune
    summary = (out / "summary.md").read_text()
    assert "| replay | 0.45 | 3 |" in summary and "Replay of the recorded" in summary
    for png in ("accuracy_vs_threshold.png", "accuracy_vs_tokens.png"):
        assert (out / png).stat().st_size > 1000


def test_sweep_resumes_and_refuses_another_config(run_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert _sweep(run_dir, out, "--n", "2") == 0
    before = rank_path(out, 0).read_text()
    assert _sweep(run_dir, out) == 0  # --n 3: only problem 3 runs
    added = read_results(rank_path(out, 0))[len(before.splitlines()):]
    assert rank_path(out, 0).read_text().startswith(before)
    assert {r["problem_id"] for r in added} == {"builtin-test-0-2"} and len(added) == 6
    capsys.readouterr()
    assert _sweep(run_dir, out, "--signal", "policy") == 2
    assert "another config (changed: signal)" in capsys.readouterr().err


def test_parse_thresholds():
    assert parse_thresholds("0.5, 0.1,0.5") == [0.1, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse_thresholds("0.2,1.5")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_thresholds("0.2;0.3")
