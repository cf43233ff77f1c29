"""``StepEnsemble``: K step verifiers read as one (the mean of their calibrated logits, calibrated
once more); saved and loaded like a single head; trained by ``rewind train-verifier --heads K``,
whose head 0 is the single-head recipe's to the bit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_step_verifier import _planted

from experiments.commands.cli import main
from search.interfaces import StepView
from verifier import load_verifier
from verifier.config import VerifierTrainConfig
from verifier.step_head import StepEnsemble, StepVerifier
from verifier.step_train import batch_of, calibrate_steps, score_data
from verifier.train import train_verifier

DIGITS = (5, 6, 7, 8)


def _data(n_groups=12):
    d = _planted(n_groups=n_groups)
    d.views = [StepView(v.hidden, v.logprobs, v.entropies, v.depth, ids=(5, 6, 3, 7, 8, 4)) for v in d.views]
    return d


def _member(seed: int, **kw) -> StepVerifier:
    torch.manual_seed(seed)
    head = StepVerifier(16, width=32, layers=1, tokenizer_fingerprint="abc", digit_ids=DIGITS, **kw)
    torch.nn.init.normal_(head.place.weight)
    return head


def test_the_ensemble_is_the_mean_of_its_members_calibrated_logits():
    d = _data()
    a, b = _member(0), _member(1)
    a.logit_scale.fill_(2.0)
    b.logit_bias.fill_(-1.5)
    ens = StepEnsemble([a, b])
    ens.logit_scale.fill_(0.7)
    ens.logit_bias.fill_(0.3)
    batch = batch_of(d, range(len(d)), ens)
    with torch.no_grad():
        want = (a(batch) + b(batch)) / 2 * 0.7 + 0.3
        torch.testing.assert_close(ens(batch), want)
    assert not torch.allclose(want, a(batch).detach() * 0.7 + 0.3)  # both members count
    torch.testing.assert_close(ens.score_steps(d.views), torch.sigmoid(want))
    torch.testing.assert_close(torch.tensor(score_data(ens, d)), torch.sigmoid(want))
    # a calculator annotation that does not parse is wrong by its form, whatever the members say
    odd = StepView(d.views[0].hidden, d.views[0].logprobs, d.views[0].entropies, 1, ids=d.views[0].ids, text="x <<3*4=12\n")
    assert float(ens.score_steps([odd])[0]) == 1.0


def test_one_member_ensemble_scores_like_its_member_and_calibration_fits_the_mean():
    d = _data()
    a = _member(3)
    a.logit_scale.fill_(-2.0)  # a member whose calibration flips its raw order: the ensemble reads calibrated logits
    a.logit_bias.fill_(0.5)
    ens = StepEnsemble([a])
    torch.testing.assert_close(ens.score_steps(d.views), a.score_steps(d.views))
    s, bias = calibrate_steps(ens, d)  # the ensemble's own Platt scale: the member's stays as it was
    assert float(ens.logit_scale) == s and float(ens.logit_bias) == bias
    assert float(a.logit_scale) == -2.0 and float(a.logit_bias) == 0.5
    with torch.no_grad():
        b = batch_of(d, range(len(d)), ens)
        torch.testing.assert_close(ens(b), (a.raw_logits(b) * -2.0 + 0.5) * s + bias)


def test_members_must_read_the_same_policy_and_window():
    with pytest.raises(ValueError, match="member 1"):
        StepEnsemble([_member(0), _member(1, max_tokens=48)])
    other = StepVerifier(16, width=32, layers=1, tokenizer_fingerprint="xyz", digit_ids=DIGITS)
    with pytest.raises(ValueError, match="member 1"):
        StepEnsemble([_member(0), other])
    with pytest.raises(ValueError, match="at least one"):
        StepEnsemble([])
    with pytest.raises(TypeError, match="single StepVerifier"):
        StepEnsemble([StepEnsemble([_member(0)])])


def test_save_load_round_trip_and_broken_folders(tmp_path):
    d = _data()
    a, b = _member(0), _member(1)
    calibrate_steps(a, d)
    calibrate_steps(b, d)
    ens = StepEnsemble([a, b])
    calibrate_steps(ens, d)
    ens.default_threshold = 0.85
    ens.save(tmp_path / "v", extra={"labels": "own-steps"})
    back = load_verifier(tmp_path / "v")
    assert isinstance(back, StepEnsemble) and len(back.members) == 2 and back.default_threshold == 0.85
    assert back.digit_ids == frozenset(DIGITS) and back.hidden_size == 16
    torch.testing.assert_close(back.score_steps(d.views), ens.score_steps(d.views))
    assert float(back.logit_scale) == float(ens.logit_scale) and float(back.logit_bias) == float(ens.logit_bias)
    # each member folder is a verifier of its own
    torch.testing.assert_close(load_verifier(tmp_path / "v" / "member-1").score_steps(d.views), b.score_steps(d.views))

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "v", broken)
    shutil.rmtree(broken / "member-1")
    with pytest.raises(FileNotFoundError, match="member-1"):
        load_verifier(broken)
    cfg = json.loads((tmp_path / "v" / "verifier_config.json").read_text())
    (broken / "verifier_config.json").write_text(json.dumps({**cfg, "members": 0}))
    with pytest.raises(ValueError, match="no members"):
        load_verifier(broken)


def test_train_verifier_heads_trains_an_ensemble_whose_head_zero_is_the_single_head(tmp_path):
    base = dict(policy="tiny", kind="step", num_problems=6, beam_width=2, beam_samples=2, max_depth=2,
                max_step_tokens=12, reference_problems=12, reference_slips=1, epochs=1, label_workers=1, batch_size=64)
    one = train_verifier(VerifierTrainConfig(out=str(tmp_path / "one"), **base), progress=False)
    (tmp_path / "three").mkdir()
    for name in ("steps.pt", "reference_steps.pt"):  # the same labels, not drawn again
        shutil.copy(one / name, tmp_path / "three" / name)
    three = train_verifier(VerifierTrainConfig(out=str(tmp_path / "three"), heads=3, **base), progress=False)
    ens = load_verifier(three)
    assert isinstance(ens, StepEnsemble) and len(ens.members) == 3
    weights = "head.safetensors"
    assert (one / "verifier" / weights).read_bytes() == (three / "verifier" / "member-0" / weights).read_bytes()
    assert (one / "verifier" / weights).read_bytes() != (three / "verifier" / "member-1" / weights).read_bytes()
    m = json.loads((three / "metrics.json").read_text())
    assert m["heads"] == 3 and len(m["member_tests"]) == 3 and len(m["member_histories"]) == 3
    assert m["n_parameters"] == 3 * json.loads((one / "metrics.json").read_text())["n_parameters"]
    assert "heads" not in json.loads((one / "metrics.json").read_text())


def test_heads_below_one_is_refused(capsys):
    with pytest.raises(ValueError, match="heads"):
        VerifierTrainConfig(out="x", policy="tiny", heads=0)
    assert main(["train-verifier", "--policy", "tiny", "--out", "/tmp/never", "--heads", "0"]) == 2
    assert "heads" in capsys.readouterr().err
