"""The step verifier's labels drawn by two processes (``label_workers=2``: the reference steps in a
side job, ``policy.workers.side_job``, while this process draws the own-step labels, one thread
each) are the labels drawn by one process at one thread, to the bit — so the verifier is the same
too. (At two threads a few matrix products round differently: the same labels up to that rounding.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import verifier.step_train as step_train
from policy.workers import can_run_side_jobs
from verifier.config import VerifierTrainConfig
from verifier.step_data import StepData
from verifier.train import load_frozen_policy, train_verifier

pytestmark = pytest.mark.skipif(not can_run_side_jobs(), reason="needs a fork server and two cores")


def _config(out: Path, workers: int, **kw) -> VerifierTrainConfig:
    return VerifierTrainConfig(**{**dict(out=str(out), policy="tiny", kind="step", num_problems=6, beam_width=2,
                                         beam_samples=2, max_depth=2, max_step_tokens=12, reference_problems=12,
                                         reference_slips=1, epochs=1, label_workers=workers, batch_size=64), **kw})


def _same_steps(a: Path, b: Path, key: str) -> None:
    x, y = StepData.load(a, key=key), StepData.load(b, key=key)
    assert x is not None and y is not None and len(x) == len(y) > 0
    assert x.labels == y.labels and x.texts == y.texts and x.groups == y.groups and x.problem_ids == y.problem_ids
    for u, v in zip(x.views, y.views, strict=True):
        assert u.ids == v.ids
        for s, t in ((u.hidden, v.hidden), (u.logprobs, v.logprobs), (u.entropies, v.entropies)):
            assert torch.equal(s, t)


@pytest.fixture
def side_calls(monkeypatch) -> list[str]:
    """The names of the functions ``train_step_verifier`` hands to a side job, in order."""
    calls: list[str] = []
    real = step_train.side_job

    def spy(*args, **kwargs):
        calls.append(args[0].__name__)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_train, "side_job", spy)
    return calls


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_label_workers_draw_the_same_labels_and_train_the_same_verifier(tmp_path, side_calls, one_thread):
    calls = side_calls
    one, two = _config(tmp_path / "one", 1), _config(tmp_path / "two", 2)
    train_verifier(one, progress=False)
    assert calls == []
    train_verifier(two, progress=False)
    assert calls == ["_side_job"]  # the side job ran (not a fallback to one process)
    policy = load_frozen_policy("tiny")
    key = step_train.label_key(two, policy)
    _same_steps(tmp_path / "one" / "steps.pt", tmp_path / "two" / "steps.pt", key)
    _same_steps(tmp_path / "one" / "reference_steps.pt", tmp_path / "two" / "reference_steps.pt",
                step_train.reference_key(key, two))
    assert not (tmp_path / "two" / "reference_steps.pending.pt").exists()
    head = "verifier/head.safetensors"
    assert (tmp_path / "one" / head).read_bytes() == (tmp_path / "two" / head).read_bytes()


def test_a_side_job_on_another_policy_is_refused_and_the_steps_drawn_here(tmp_path, one_thread):
    """The side job loads ``config.policy`` from disk; a caller's policy that is not that one makes it
    fail, and the reference steps are drawn in this process instead (with a warning)."""
    policy = load_frozen_policy("tiny")
    with torch.no_grad():
        policy.model.get_input_embeddings().weight.mul_(1.5)
    cfg = _config(tmp_path / "side", 2)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        step_train.train_step_verifier(cfg, policy, progress=False, side_labels=True)
    assert any("side job failed" in str(w.message) and "not the one" in str(w.message) for w in got)
    serial = _config(tmp_path / "serial", 1)
    step_train.train_step_verifier(serial, policy, progress=False, side_labels=True)
    key = step_train.label_key(cfg, policy)
    _same_steps(tmp_path / "side" / "reference_steps.pt", tmp_path / "serial" / "reference_steps.pt",
                step_train.reference_key(key, cfg))


def test_the_token_head_trained_in_the_side_job_is_the_one_trained_here(tmp_path, side_calls, one_thread):
    """With a token head and no reference steps the side job trains the token head while this process
    draws the labels; at one thread each, the head and the mixture are the ones one process makes."""
    calls = side_calls
    knobs = dict(reference_problems=0, token_head_problems=30, token_head_steps=4)
    train_verifier(_config(tmp_path / "one", 1, **knobs), progress=False)
    assert calls == []
    train_verifier(_config(tmp_path / "two", 2, **knobs), progress=False)
    assert calls == ["_side_job"]
    for name in ("token_head/head.safetensors", "verifier/head.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    calls.clear()  # a rerun into the same folder reuses the saved head: no side job, no training
    (tmp_path / "two" / "metrics.json").unlink()
    train_verifier(_config(tmp_path / "two", 2, **knobs), progress=False)
    assert calls == [] and (tmp_path / "two" / "metrics.json").exists()
