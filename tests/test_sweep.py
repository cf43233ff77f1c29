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


@pytest.mark.parametrize("method, knobs, derived", [
    ("beam", {"width": 2, "samples": 2, "keep_last": False}, [("b τ=0.45 keep-last", 0.45, {"keep_last": True}),
                                                                ("b τ=0.55", 0.55, {}), ("b lazy", 1.0, {"accept": 0.5})]),
    ("best_of_n", {"n": 4, "vote": "weighted"}, [("v majority", 1.0, {"vote": "majority"}), ("v τ=0.5", 0.5, {})]),
])
def test_evaluate_replays_are_the_live_rows_where_exact(run_dir, tmp_path, method, knobs, derived):
    """``evaluate(replays=...)``: rows derived from each τ = 1 tree (another threshold, ``keep_last``,
    another vote) equal the live runs of those settings, and the live run of a derived tag then only
    solves the problems whose replay was not exact."""
    from experiments.studies.evaluate import evaluate
    from experiments.wiring import load_run
    from policy.data import generate_problems

    policy, verifier = load_run(run_dir)
    problems = list(generate_problems(4, seed=5, split="test"))
    common = dict(policy=policy, verifier=verifier, method=method, seed=1, progress=False, max_depth=3,
                  max_step_tokens=10, **{k: v for k, v in knobs.items() if k not in ("keep_last", "vote")})
    base = {k: v for k, v in knobs.items() if k in ("keep_last", "vote")}
    out = tmp_path / "with_replays.jsonl"
    evaluate(problems, out=out, tag="base", threshold=1.0, replays=derived, **common, **base)
    replayed = [r for r in read_results(out) if r["tag"] != "base"]
    assert replayed and all(r["stats"]["replayed"] for r in replayed)
    pruned = 0
    for tag, t, change in derived:
        live = {r["problem_id"]: r for r in evaluate(problems, out=tmp_path / f"live-{t}.jsonl", tag=tag, threshold=t,
                                                      **common, **{**base, **change})}
        mine = [r for r in replayed if r["tag"] == tag]
        for r in mine:
            twin = live[r["problem_id"]]
            assert (r["answer"], r["correct"], r["threshold"]) == (twin["answer"], twin["correct"], twin["threshold"])
            assert r["stats"]["tokens_generated"] == twin["stats"]["tokens_generated"]
            assert r["stats"]["nodes_pruned"] == twin["stats"]["nodes_pruned"]
            pruned += r["stats"]["nodes_pruned"]
        both = evaluate(problems, out=out, tag=tag, threshold=t, **common, **{**base, **change})
        assert len(both) == len(problems)  # the replayed rows, and live rows for the rest only
        assert sum(not r["stats"].get("replayed") for r in both) == len(problems) - len(mine)
    assert pruned > 0  # the derived thresholds do prune
