"""Verifier training: one step moves the parameters, the end-to-end run writes a loadable head, bad input."""

import json

import pytest
import torch

from experiments.commands.cli import main
from policy import tiny_policy
from verifier import VerifierHead, load_verifier
from verifier.config import VerifierTrainConfig
from verifier.features import Features
from verifier.metrics import auroc
from verifier.train import calibrate, fit_head, split_problems, train_verifier

H = 32


def _features(labels, n_seq=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(labels, dtype=torch.float32)
    n = labels.numel()
    hidden = torch.randn(n, H, generator=g)
    hidden[:, : H // 2] += 2.0 * labels[:, None]  # separable: positives shifted along half the axes
    return Features(hidden, labels, torch.rand(n, generator=g), torch.arange(n) % n_seq, torch.arange(n),
                    torch.zeros(n, dtype=torch.bool), tuple(f"p{i}" for i in range(n_seq)), ("injected",) * n_seq)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(hidden_size=H, num_layers=2, num_heads=2, num_kv_heads=1)


def test_parameters_change_after_one_step():
    train = _features([0, 1] * 16)
    torch.manual_seed(0)
    before = {k: v.detach().clone() for k, v in VerifierHead(H, width=16).named_parameters()}
    head, history = fit_head(train, None, width=16, epochs=1, batch_size=len(train), seed=0, progress=False)
    assert len(history) == 1
    after = dict(head.named_parameters())
    assert before.keys() == after.keys()
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not move"


def test_fit_head_learns_a_separable_problem():
    head, history = fit_head(_features([0, 0, 0, 1] * 40), _features([0, 1] * 20, seed=1), width=16, epochs=30,
                             lr=1e-2, progress=False)
    assert max(h["val_auroc"] for h in history) > 0.95


def test_training_refuses_bad_labels():
    with pytest.raises(ValueError, match="all one class: all 8 labelled prefixes are negative"):
        fit_head(_features([0] * 8), None, progress=False)
    with pytest.raises(ValueError, match="all one class: all 8 labelled prefixes are positive"):
        fit_head(_features([1] * 8), None, progress=False)
    with pytest.raises(ValueError, match="label set is empty"):
        fit_head(_features([]), None, progress=False)
    nan = _features([0, 1] * 4)
    nan.hidden[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_head(nan, None, progress=False)


def test_split_is_by_problem_and_disjoint():
    ids = [f"p{i}" for i in range(20)]
    s = split_problems(ids, test_share=0.25, val_share=0.15, seed=0)
    assert s["train"] | s["val"] | s["test"] == set(ids)
    assert not (s["train"] & s["val"] or s["train"] & s["test"] or s["val"] & s["test"])
    assert len(s["test"]) == 5 and len(s["val"]) == 3
    assert s == split_problems(list(reversed(ids)), test_share=0.25, val_share=0.15, seed=0)
    with pytest.raises(ValueError, match="at least 3 problems"):
        split_problems(["a", "b"], test_share=0.2, val_share=0.2, seed=0)


def test_train_verifier_end_to_end(policy, tmp_path):
    cfg = VerifierTrainConfig(out=str(tmp_path / "run"), policy="tiny", kind="token", labels="injected",
                              num_problems=12, width=16, epochs=3)
    out = train_verifier(cfg, policy=policy, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    inj = metrics["test"]["injected"]["token"]
    assert set(inj) == {"head", "policy_p_backtrack"}
    for d in inj.values():
        assert 0.0 <= d["auroc"] <= 1.0 and set(d["false_prune"]) == {"0.3", "0.5", "0.7", "0.9"}
        assert set(d["lead_time"]["0.5"]) == {"median", "never", "n"}
    assert metrics["n_positive"]["train"] > 0 and metrics["epochs_run"] >= 1
    assert (out / "reliability_injected.png").stat().st_size > 1000
    head = load_verifier(out, policy)
    assert head.hidden_size == H and json.loads((out / "verifier" / "verifier_config.json").read_text())["labels"] == "injected"
    # the cached features are reused when only training knobs change
    stamp = (out / "features.pt").stat().st_mtime_ns
    train_verifier(VerifierTrainConfig(**{**vars(cfg), "lr": 1e-3}), policy=policy, progress=False)
    assert (out / "features.pt").stat().st_mtime_ns == stamp


def test_config_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="labels must be one of"):
        VerifierTrainConfig(out="x", policy="tiny", labels="magic")
    with pytest.raises(ValueError, match="policy is required"):
        VerifierTrainConfig(out="x")
    assert main(["train-verifier", "--policy", str(tmp_path / "nope" / "run"), "--out", str(tmp_path / "o")]) == 2
    assert "nope/run does not exist" in capsys.readouterr().err


def test_calibration_keeps_ranking_and_fixes_the_prior(tmp_path):
    train, val = _features([0] * 19 + [1], seed=2), _features([0] * 19 + [1], seed=3)
    head, _ = fit_head(train, None, width=16, epochs=5, progress=False)
    before = head.score(val.hidden)
    scale, bias = calibrate(head, val)
    after = head.score(val.hidden)
    assert scale > 0
    assert auroc(after.numpy(), val.labels.numpy()) == pytest.approx(auroc(before.numpy(), val.labels.numpy()))
    rate = float(val.labels.mean())
    assert abs(float(after.mean()) - rate) < abs(float(before.mean()) - rate)
    head.save(tmp_path / "h")
    torch.testing.assert_close(load_verifier(tmp_path / "h").score(val.hidden), after)
