"""The token head (``fit_token_head``): a step verifier that reads a step's tokens only, mixed with the
feature-reading head by weights fitted on validation steps (``StepEnsemble.weights``, ``fit_mixture``),
and trained by ``rewind train-verifier --token-head-problems N``."""

from __future__ import annotations

import json
import random

import pytest
import torch
from test_token_steps import _marked

from experiments.commands.cli import main
from search.interfaces import StepView
from verifier import load_verifier
from verifier.config import VerifierTrainConfig
from verifier.step_data import StepData
from verifier.step_head import StepEnsemble, StepVerifier
from verifier.step_train import batch_of, fit_mixture, fit_token_head, score_data, sibling_auroc
from verifier.train import train_verifier

DIGITS = (5, 6, 7, 8)


def _views_of(tokens, *, seed: int, mark: bool) -> StepData:
    """Token groups as policy steps with random features; ``mark``: wrong steps also carry the planted
    hidden mark of ``_planted`` (a signal only a feature-reading head can see)."""
    g = torch.Generator().manual_seed(seed)
    d = StepData()
    for ids, y, grp in zip(tokens.ids, tokens.labels, tokens.groups):
        h = torch.randn(len(ids), 16, generator=g)
        if mark and y:
            h[0, 0] += 6.0
        d.views.append(StepView(h, -torch.rand(len(ids), generator=g), torch.rand(len(ids), generator=g), 1, ids=ids))
        d.labels.append(y)
        d.groups.append(grp)
        d.problem_ids.append(f"p{grp}")
        d.kinds.append("result" if y else "ok")
        d.logprobs.append(-1.0)
        d.path_logprobs.append(-1.0)
        d.p_policy.append(0.0)
        d.texts.append("x")
    return d


def test_a_token_head_reads_tokens_only_and_learns_them():
    head = fit_token_head(_marked(300, seed=1), hidden_size=16, steps=120, width=32, layers=1, lr=3e-3,
                          progress=False)
    assert not head.reads_features
    test = _views_of(_marked(40, seed=2), seed=0, mark=False)
    s = score_data(head, test)
    assert sibling_auroc(s, test.labels, test.groups)["auroc"] > 0.95
    # other hidden states, log-probs and entropies: the same scores to the bit
    other = [StepView(torch.randn_like(v.hidden) * 5, torch.full_like(v.logprobs, -9.0), torch.ones_like(v.entropies),
                      v.depth, ids=v.ids) for v in test.views]
    torch.testing.assert_close(head.score_steps(other), head.score_steps(test.views), rtol=0, atol=0)
    # a head that reads features does not ignore them (the check above can fail)
    reader = StepVerifier(16, width=32, layers=1)
    assert not torch.equal(reader.score_steps(other), reader.score_steps(test.views))
    with pytest.raises(ValueError, match="steps"):
        fit_token_head(_marked(5, seed=0), hidden_size=16, steps=0, progress=False)


def test_weighted_ensemble_sums_weighted_member_logits_and_round_trips(tmp_path):
    d = _views_of(_marked(12, seed=3), seed=1, mark=True)
    torch.manual_seed(0)
    a = StepVerifier(16, width=32, layers=1, digit_ids=DIGITS)
    b = StepVerifier(16, width=32, layers=1, digit_ids=DIGITS, reads_features=False)
    b.logit_scale.fill_(2.0)
    ens = StepEnsemble([a, b], weights=[0.3, 1.7])
    ens.logit_bias.fill_(-0.4)
    batch = batch_of(d, range(len(d)), ens)
    with torch.no_grad():
        torch.testing.assert_close(ens(batch), 0.3 * a(batch) + 1.7 * b(batch) - 0.4)
        assert not torch.allclose(ens(batch), (a(batch) + b(batch)) / 2 - 0.4)
    ens.save(tmp_path / "v")
    back = load_verifier(tmp_path / "v")
    assert back.weights.tolist() == pytest.approx([0.3, 1.7])
    assert not back.members[1].reads_features and back.members[0].reads_features
    torch.testing.assert_close(back.score_steps(d.views), ens.score_steps(d.views))
    # a folder saved before weights existed reads as the mean
    from safetensors.torch import load_file, save_file
    w = load_file(str(tmp_path / "v" / "head.safetensors"))
    save_file({k: v for k, v in w.items() if k != "weights"}, str(tmp_path / "v" / "head.safetensors"))
    assert load_verifier(tmp_path / "v").weights.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="weights"):
        StepEnsemble([a, b], weights=[1.0])


def test_fit_mixture_weights_the_head_that_sees_the_signal():
    # validation steps whose wrong rows carry the token mark only: the token head sees it, the feature head not
    tokens = _marked(300, seed=1)
    token = fit_token_head(tokens, hidden_size=16, steps=120, width=32, layers=1, lr=3e-3, progress=False)
    torch.manual_seed(0)
    blind = StepVerifier(16, width=32, layers=1)
    val = _views_of(_marked(60, seed=4), seed=2, mark=False)
    ens = StepEnsemble([blind, token])
    weights = fit_mixture(ens, val)
    assert weights[1] > 4 * weights[0], weights  # from the mean (1:1) to the head that sees the mark
    assert float(ens.logit_scale) == 1.0
    s = score_data(ens, val)
    assert sibling_auroc(s, val.labels, val.groups)["auroc"] > 0.95
    # one class only: nothing to fit, the weights stay
    one = _views_of(_marked(5, seed=5), seed=3, mark=False)
    one.labels = [0] * len(one)
    before = ens.weights.tolist()
    assert fit_mixture(ens, one) == pytest.approx(before)


def test_a_mixture_of_a_feature_head_and_a_token_head_beats_both_when_each_sees_half():
    # wrong steps carry either the hidden mark (features) or token 9 (tokens): each head sees half
    rng = random.Random(0)

    def data(n, seed, share=0.5):
        t = _marked(n, seed=seed)
        d = _views_of(t, seed=seed, mark=False)
        for i, (ids, y) in enumerate(zip(t.ids, t.labels)):
            if y and rng.random() < share:  # this wrong step shows the hidden mark instead of token 9
                clean = tuple(20 if x == 9 else x for x in ids)
                h = d.views[i].hidden.clone()
                h[0, 0] += 6.0
                d.views[i] = StepView(h, d.views[i].logprobs, d.views[i].entropies, 1, ids=clean)
        return d

    from verifier.step_train import fit_step_verifier
    train, val, test = data(200, 1, share=1.0), data(60, 2), data(60, 3)  # the feature head learns the mark only
    feat, _ = fit_step_verifier(train, val, hidden_size=16, width=32, layers=1, epochs=6, batch_size=64, lr=3e-3,
                                dropout=0.0, select="last", progress=False)
    token = fit_token_head(_marked(300, seed=4), hidden_size=16, steps=120, width=32, layers=1, lr=3e-3,
                           progress=False)
    ens = StepEnsemble([feat, token])
    fit_mixture(ens, val)
    auc = {name: sibling_auroc(score_data(h, test), test.labels, test.groups)["auroc"]
           for name, h in (("feat", feat), ("token", token), ("mix", ens))}
    assert auc["mix"] > max(auc["feat"], auc["token"]) + 0.02, auc


def test_train_verifier_token_head_saves_a_weighted_mixture(tmp_path):
    base = dict(policy="tiny", kind="step", num_problems=6, beam_width=2, beam_samples=2, max_depth=2,
                max_step_tokens=12, reference_problems=12, reference_slips=1, epochs=1, label_workers=1, batch_size=64)
    out = train_verifier(VerifierTrainConfig(out=str(tmp_path / "r"), token_head_problems=20, token_head_steps=3,
                                             **base), progress=False)
    ens = load_verifier(out)
    assert isinstance(ens, StepEnsemble) and len(ens.members) == 2
    assert ens.members[0].reads_features and not ens.members[1].reads_features
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["token_head"]["weights"]) == 2 and "sibling_auroc" in m["token_head"]["token_head_test"]
    assert (out / "token_head" / "verifier_config.json").exists()
    # a rerun reuses the token head (its key matches) and gives the same verifier
    before = (out / "token_head" / "head.safetensors").read_bytes()
    train_verifier(VerifierTrainConfig(out=str(tmp_path / "r"), token_head_problems=20, token_head_steps=3, **base),
                   progress=False)
    assert (out / "token_head" / "head.safetensors").read_bytes() == before


def test_bad_token_head_knobs_are_refused(capsys):
    with pytest.raises(ValueError, match="token_head_problems"):
        VerifierTrainConfig(out="x", policy="tiny", token_head_problems=-1)
    with pytest.raises(ValueError, match="token_head_steps"):
        VerifierTrainConfig(out="x", policy="tiny", token_head_steps=0)
    assert main(["train-verifier", "--policy", "tiny", "--out", "/tmp/never", "--token-head-steps", "0"]) == 2
    assert "token_head_steps" in capsys.readouterr().err
