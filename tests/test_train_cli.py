"""``rewind train-policy`` end to end: a two-process (gloo, CPU) DDP run trains and loads; DPO from it;
user errors are one line, exit 2."""

import json
import os
import subprocess
import sys

import pytest

from experiments.commands.cli import main
from policy import load_policy

SMALL = ["--num-problems", "16", "--num-eval", "4", "--batch-size", "4", "--max-steps", "2",
         "--logging-steps", "1", "--eval-steps", "1000", "--save-steps", "1", "--max-length", "512"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_two_process_run_trains_and_loads(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "experiments.commands.cli", "train-policy", "--mode", "hard", "--out", str(out), *SMALL]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2
    losses = [r["loss"] for r in metrics["log_history"] if "loss" in r]
    assert len(losses) == 2
    assert (out / "checkpoints" / "checkpoint-2" / "rng_state_1.pth").exists()  # both ranks checkpointed
    policy = load_policy(out / "policy")
    assert policy.backtrack_id is not None
    # a DPO round from that run, single process
    dpo = tmp_path / "dpo"
    assert main(["train-policy", "--mode", "dpo", "--init", str(out), "--out", str(dpo), *SMALL]) == 0
    assert load_policy(dpo / "policy").backtrack_id == policy.backtrack_id


def test_user_errors_are_one_line(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    assert main(["train-policy", "--mode", "hard", "--model", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert "not a policy checkpoint" in capsys.readouterr().err
    assert main(["train-policy", "--mode", "dpo", "--out", str(tmp_path / "o")]) == 2
    assert "needs --init" in capsys.readouterr().err
    assert main(["train-policy", "--mode", "clean", "--out", str(tmp_path / "o"), "--max-length", "20",
                 "--num-problems", "4", "--num-eval", "2"]) == 2
    assert "longer than the context of 20" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()
