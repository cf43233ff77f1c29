"""``rewind eval``: results, summary, resume, config guard, bad input, GSM8K path, torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.commands.cli import main
from experiments.studies.evaluate import read_results
from experiments.studies.shard import done_keys, merge_results, rank_path, take_shard
from policy import tiny_policy

FAST = ["--method", "decode", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "policy"
    tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1).save(path)
    return path


def _ids(path: Path) -> list[str]:
    return [r["problem_id"] for r in read_results(path)]


def test_eval_writes_results_and_summary_then_resumes(policy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--run", str(policy_dir), "--n", "4", "--out", str(out), *FAST]) == 0
    rows = read_results(out / "results.jsonl")
    assert len(rows) == 4 and len(set(_ids(out / "results.jsonl"))) == 4
    assert len({r["config_hash"] for r in rows}) == 1 and all(r["tag"] == "decode" for r in rows)
    assert "| decode | 4 |" in (out / "summary.md").read_text()
    before = (rank_path(out, 0)).read_text()
    # a rerun with more problems does only the new ones
    assert main(["eval", "--run", str(policy_dir), "--n", "6", "--out", str(out), *FAST]) == 0
    after = read_results(rank_path(out, 0))
    assert rank_path(out, 0).read_text().startswith(before) and len(after) == 6
    assert len(read_results(out / "results.jsonl")) == 6


def test_eval_refuses_another_config_and_bad_runs(policy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--run", str(policy_dir), "--n", "2", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(policy_dir), "--n", "2", "--out", str(out), "--method", "decode",
                 "--max-new-tokens", "13"]) == 2
    assert "another config (changed: max_new_tokens)" in capsys.readouterr().err
    half = tmp_path / "half"
    (half / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    assert main(["eval", "--run", str(half), "--n", "2", "--out", str(tmp_path / "o2"), *FAST]) == 2
    assert "half-finished run" in capsys.readouterr().err
    assert main(["eval", "--run", str(policy_dir), "--n", "2", "--out", str(tmp_path / "o3"), "--method", "beam",
                 "--signal", "verifier"]) == 2
    assert "has no verifier" in capsys.readouterr().err
    assert main(["eval", "--run", str(policy_dir), "--n", "2", "--out", str(tmp_path / "o4"), "--method", "beam",
                 "--knobs", "widht=2"]) == 2
    assert "widht" in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "format": 0}))
    assert main(["eval", "--run", str(policy_dir), "--n", "2", "--out", str(out), *FAST]) == 2
    assert "another version of rewind" in capsys.readouterr().err


def test_gsm8k_path_with_a_tiny_model(policy_dir, tmp_path):
    out = tmp_path / "gsm"
    args = ["eval", "--task", "gsm8k", "--model", str(policy_dir), "--n", "5", "--out", str(out), "--method", "beam",
            "--threshold", "1.0", "--knobs", "width=2,samples=2,max_depth=2,max_step_tokens=8", "--trees", "1"]
    assert main(args) == 0
    rows = read_results(out / "results.jsonl")
    assert [r["problem_id"] for r in rows] == [f"gsm8k-test-{i}" for i in range(5)]
    assert all(r["reference"] and r["stats"]["tokens_generated"] > 0 for r in rows)
    assert len(list((out / "trees").glob("*.json"))) == 1


def test_merge_keeps_one_row_per_key_and_orders_by_problem(tmp_path):
    from policy.atomic import append_jsonl

    for rank, ids in ((0, ["a", "c"]), (1, ["b", "c"])):
        for pid in ids:
            append_jsonl(rank_path(tmp_path, rank), {"tag": "t", "problem_id": pid, "rank": rank})
    with open(rank_path(tmp_path, 1), "a") as f:
        f.write('{"tag": "t", "probl')  # a torn tail of a killed writer
    rows = merge_results(tmp_path)
    assert [(r["problem_id"], r["rank"]) for r in rows] == [("a", 0), ("b", 1), ("c", 0)]
    assert done_keys(tmp_path) == {("t", "a"), ("t", "b"), ("t", "c")}
    assert take_shard(list(range(7)), (1, 3)) == [1, 4]


@pytest.mark.slow
def test_torchrun_two_processes_shard_merge_and_resume(policy_dir, tmp_path):
    out = tmp_path / "tr"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "experiments.commands.cli", "--",
           "eval", "--run", str(policy_dir), "--n", "5", "--out", str(out), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    r0, r1 = _ids(rank_path(out, 0)), _ids(rank_path(out, 1))
    assert len(r0) == 3 and len(r1) == 2 and not set(r0) & set(r1)
    merged = _ids(out / "results.jsonl")
    assert sorted(merged) == sorted(r0 + r1) and len(merged) == 5
    single = tmp_path / "single"
    assert main(["eval", "--run", str(policy_dir), "--n", "5", "--out", str(single), *FAST]) == 0
    by_id = {r["problem_id"]: r["answer"] for r in read_results(single / "results.jsonl")}
    assert {r["problem_id"]: r["answer"] for r in read_results(out / "results.jsonl")} == by_id
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)  # rerun: nothing new
    assert _ids(rank_path(out, 0)) == r0 and _ids(rank_path(out, 1)) == r1
