"""Faults and interruptions (issue 11 §1-2): a killed evaluation, training run or artifact write
loses no finished work, duplicates nothing, and never leaves a file that loads as valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from experiments.studies.evaluate import evaluate, read_results
from policy import load_policy, tiny_policy
from policy.data import generate_problems
from policy.sft import COMPLETE_MARKER, last_complete_checkpoint

N = 24
TINY = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
EVAL_KW = dict(method="decode", tag="decode", max_new_tokens=48, progress=False)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return path


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll ``cond()`` until true; False when the process ended first (or the time ran out)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.05)
    return False


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


EVAL_JOB = f"""
    import sys
    from experiments.studies.evaluate import evaluate
    from policy import tiny_policy
    from policy.data import generate_problems
    policy = tiny_policy(**{TINY!r})
    evaluate(generate_problems({N}, seed=3), policy=policy, out=sys.argv[1], batch_size=1, **{EVAL_KW!r})
"""


def test_killed_evaluation_resumes_intact_and_without_duplicates(tmp_path):
    out = tmp_path / "results.jsonl"
    job = _script(tmp_path, EVAL_JOB)
    proc = subprocess.Popen([sys.executable, str(job), str(out)], env=_env(), stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: _lines(out) >= 3, proc), proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = read_results(out)
    assert 3 <= len(before) < N, "the kill should land mid-way"
    # what a kill in the middle of a write leaves: a torn last line
    with open(out, "a") as f:
        f.write('{"tag": "decode", "problem_id": "torn')
    problems = generate_problems(N, seed=3)
    policy = tiny_policy(**TINY)
    rows = evaluate(problems, policy=policy, out=out, batch_size=8, **EVAL_KW)

    after = read_results(out)  # no ValueError: the torn tail did not glue onto a new row
    ids = [r["problem_id"] for r in after]
    assert sorted(ids) == sorted(p.id for p in problems)  # every problem once
    assert after[:len(before)] == before  # the finished rows are untouched
    assert len(rows) == N
    # and the resumed file holds what one uninterrupted run gives (wall time aside)
    clean = evaluate(problems, policy=policy, out=tmp_path / "clean.jsonl", batch_size=8, **EVAL_KW)

    def key(r):
        return r["problem_id"], r["answer"], r["text"], r["stats"]["tokens_generated"]

    assert sorted(map(key, after)) == sorted(map(key, clean))


def test_a_rerun_of_a_finished_evaluation_writes_nothing(tmp_path):
    problems = generate_problems(4, seed=1)
    policy = tiny_policy(**TINY)
    out = tmp_path / "r.jsonl"
    first = evaluate(problems, policy=policy, out=out, **EVAL_KW)
    text = out.read_text()
    again = evaluate(problems, policy=policy, out=out, **EVAL_KW)
    assert out.read_text() == text and again == first


SAVE_JOB = f"""
    import os, signal, sys
    from pathlib import Path
    from policy import tiny_policy
    from policy.atomic import atomic_dir
    policy = tiny_policy(**{TINY!r}, seed=int(sys.argv[2]))
    target = Path(sys.argv[1])
    with atomic_dir(target) as tmp:
        policy.model.save_pretrained(tmp)
        os.kill(os.getpid(), signal.SIGKILL)  # killed half-way: weights written, tokenizer not
"""


def test_a_save_killed_midway_leaves_the_old_artifact_or_nothing(tmp_path):
    job = _script(tmp_path, SAVE_JOB)
    target = tmp_path / "ckpt"  # not "policy": the job script's folder is on sys.path
    proc = subprocess.run([sys.executable, str(job), str(target), "1"], env=_env(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()  # only a .tmp-ckpt.* sibling, which nothing loads
    assert [p.name.startswith(".tmp-ckpt.") for p in tmp_path.iterdir() if p.is_dir()] == [True]
    with pytest.raises(FileNotFoundError):
        load_policy_or_missing(target)
    # over an existing checkpoint: the old one stays whole and loads
    tiny_policy(**TINY, seed=0).save(target)
    proc = subprocess.run([sys.executable, str(job), str(target), "1"], env=_env(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    loaded = load_policy(target)
    ref = tiny_policy(**TINY, seed=0)
    for a, b in zip(loaded.model.state_dict().values(), ref.model.state_dict().values()):
        assert (a == b).all()


def load_policy_or_missing(path: Path):
    if not path.exists():
        raise FileNotFoundError(path)
    return load_policy(path)


TRAIN = ["--mode", "hard", "--model", "tiny", "--num-problems", "64", "--num-eval", "4", "--batch-size", "4",
         "--max-steps", "40", "--save-steps", "5", "--save-total-limit", "3", "--eval-steps", "1000",
         "--logging-steps", "5", "--max-length", "512"]


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.commands.cli", "train-policy", "--out", str(out), *TRAIN]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ok = _wait_for(lambda: last_complete_checkpoint(out / "checkpoints") is not None, proc, timeout=300)
        assert ok, proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "policy").exists()  # the final policy is never half there
    done = last_complete_checkpoint(out / "checkpoints")
    step = int(done.name.split("-")[1])
    assert step < 40
    # a half-written later checkpoint (killed inside save_pretrained): no marker, so never resumed from
    half = out / "checkpoints" / "checkpoint-39"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 100)
    assert last_complete_checkpoint(out / "checkpoints") == done
    # without --resume the run refuses to overwrite
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "pass --resume" in again.stderr and "Traceback" not in again.stderr
    resumed = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 40
    assert metrics["resumed_from"] == done.name
    steps = [r["step"] for r in metrics["log_history"] if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no step trained twice in the log
    assert (out / "checkpoints" / "checkpoint-40" / COMPLETE_MARKER).exists()
    assert load_policy(out / "policy").backtrack_id is not None
