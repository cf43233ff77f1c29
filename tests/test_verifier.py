"""Verifier head, labels and features: equivalence with decoding and search, bad input."""

import pytest
import torch

from policy import tiny_policy
from policy.data import Problem, Segment, inject_errors
from policy.data.problems import format_prompt
from policy.generate import generate, newline_token_ids
from search.interfaces import StepRequest
from verifier import VerifierHead, load_verifier, tokenizer_fingerprint
from verifier.features import compute_features, sequence_hidden
from verifier.labels import (
    IGNORE,
    LabelledSequence,
    holds_error,
    labels_from_example,
    labels_from_rollout,
    mc_labels,
)

PROBLEM = Problem("Ann has 3 bags of 4 pens. How many pens?", "Ann has <<3*4=12>>12 pens.\n#### 12", "12", "p0")


@pytest.fixture(scope="module")
def policy():
    return tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)


def _head(policy, seed=0):
    torch.manual_seed(seed)
    return VerifierHead(policy.hidden_size, width=16,
                        tokenizer_fingerprint=tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id))


def _ref_hidden(policy, alive_ids):
    """The last-layer state at the last token of a separate plain forward on the alive path."""
    with torch.no_grad():
        out = policy.model(input_ids=torch.tensor([list(alive_ids)]), output_hidden_states=True)
    return out.hidden_states[-1][0, -1]


def test_search_path_scores_equal_a_separate_forward(policy):
    head = _head(policy)
    engine = policy.engine()
    root = engine.start([PROBLEM.question])[0]
    first = engine.expand([StepRequest(state=root.state, seeds=(1, 2, 3))], temperature=1.0, max_step_tokens=10)[0]
    parent = next(s for s in first.samples if s.state is not None)
    second = engine.expand([StepRequest(state=parent.state, seeds=(4, 5, 6, 7))], temperature=1.0, max_step_tokens=10)[0]
    checked = 0
    for prefix, samples in ((root.ids, first.samples), (root.ids + parent.ids, second.samples)):
        for s in samples:
            if s.stop_reason not in ("newline", "max_step_tokens", "answer") or s.raw_ids[-1] == policy.backtrack_id:
                continue  # the step's last token was not fed (EOS, rejected) or is inside a run
            ref = _ref_hidden(policy, prefix + s.ids)
            torch.testing.assert_close(s.hidden, ref, atol=1e-4, rtol=1e-4)
            assert torch.allclose(head.score(s.hidden[None]), head.score(ref[None]), atol=1e-5)
            checked += 1
    assert checked >= 3


def test_layout_features_equal_decoding_hidden_states(policy):
    """The hard-layout forward gives, at every fed generated token (⟨b⟩-runs included), the state decoding saw."""
    prompts = [format_prompt(PROBLEM.question), format_prompt("Bo has 2 cats.")]
    gens = generate(policy, prompts, do_sample=True, max_new_tokens=40, seed=3, backtrack_bias=4.0, return_hidden=True)
    assert any(g.backtracks for g in gens), "the test needs a sample with a ⟨b⟩-run"
    seqs = [(list(g.prompt_ids) + list(g.raw_ids), len(g.prompt_ids)) for g in gens]
    for g, (hidden, p_b) in zip(gens, sequence_hidden(policy, seqs)):
        n = len(g.prompt_ids)
        torch.testing.assert_close(hidden[n: n + g.hidden.shape[0]], g.hidden, atol=1e-4, rtol=1e-4)
        assert ((p_b >= 0) & (p_b <= 1)).all()


def test_injected_labels_follow_segments(policy):
    tok, bt = policy.tokenizer, policy.backtrack_id
    ex = inject_errors(PROBLEM, tok, seed=3, kinds=("wrong_result",), span="number")[0]
    seq = labels_from_example(ex, bt, newline_token_ids(tok))
    errors = [t for t, s in enumerate(ex.segments) if s == Segment.ERROR]
    runs = [t for t, s in enumerate(ex.segments) if s == Segment.BACKTRACK]
    assert errors and runs and runs[0] == errors[-1] + 1
    assert all(seq.labels[t] == 1.0 for t in errors)  # an uncorrected error in the prefix
    assert all(seq.labels[t] == IGNORE for t in runs)  # inside the ⟨b⟩-run
    assert seq.labels[errors[0] - 1] == 0.0 and seq.labels[runs[-1] + 1] == 0.0  # before it, and the correction
    assert seq.labels[ex.prompt_len - 1] == 0.0 and all(v == IGNORE for v in seq.labels[: ex.prompt_len - 1])
    assert seq.labels[-1] == IGNORE  # EOS is never fed
    assert sorted(set(seq.labels)) == [IGNORE, 0.0, 1.0]
    assert sum(seq.step_end) == ex.input_ids.count(tok.encode("\n", add_special_tokens=False)[0])


@pytest.mark.parametrize("text,wrong", [
    ("Ann has <<3*4=1", False), ("Ann has <<3*4=13", True), ("Ann has <<3*4=12>>12 pens.\n", False),
    ("Ann has <<3*4=13>>13", True), ("Ann has <<3*4=12>", False), ("<<3*4=13>", True), ("Ann has <<3*", False), ("<<3*4=12>>12\n<<12-2=1", False),
    ("<<3*4=12>>12\n<<12-2=9", True), ("<<3*=5>>5", True),
])
def test_holds_error_on_prefixes(text, wrong):
    assert holds_error(text) is wrong


def test_rollout_labels_follow_the_alive_text(policy):
    tok, bt = policy.tokenizer, policy.backtrack_id
    prompt = tok.encode(format_prompt(PROBLEM.question), add_special_tokens=False)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    gen = enc("Ann has <<3*4=13") + [bt] + enc("2>>12 pens.\n#### 12\n")
    seq = labels_from_rollout(PROBLEM, prompt + gen, len(prompt), tok, bt)
    at = len(prompt) + len(enc("Ann has <<3*4=1"))
    assert seq.labels[at] == 1.0 and seq.labels[at + 1] == IGNORE and seq.labels[at + 2] == 0.0
    assert all(v == 0.0 for v in seq.labels[len(prompt) - 1: at])
    assert seq.answer_wrong is False
    # steps that all check, but a wrong final answer: the checker cannot place the error
    bad = labels_from_rollout(PROBLEM, prompt + enc("Ann has <<3*4=12>>12 pens.\n#### 13\n"), len(prompt), tok, bt)
    assert bad.answer_wrong is True
    assert bad.labels[len(prompt) - 1] == 0.0 and all(v == IGNORE for v in bad.labels[len(prompt):])


def test_mc_labels_are_step_end_shares(policy):
    tok, bt = policy.tokenizer, policy.backtrack_id
    prompt = tok.encode(format_prompt(PROBLEM.question), add_special_tokens=False)
    ids = prompt + tok.encode("Ann has <<3*4=12>>12 pens.\n#### 12\n", add_special_tokens=False)
    seq = labels_from_rollout(PROBLEM, ids, len(prompt), tok, bt)
    kwargs = dict(k=2, max_new_tokens=6, seed=1, progress=False)
    mc = mc_labels(policy, [seq], {PROBLEM.id: PROBLEM}, **kwargs)[0]
    assert mc == mc_labels(policy, [seq], {PROBLEM.id: PROBLEM}, **kwargs)[0]  # seeded
    labelled = [t for t, v in enumerate(mc.labels) if v != IGNORE]
    assert labelled == [t for t in range(len(prompt) - 1, len(ids) - 1) if seq.step_end[t]]
    assert len(labelled) == 2  # the prompt's last newline and the first step's
    assert all(mc.labels[t] in (0.0, 0.5, 1.0) for t in labelled)


def test_compute_features_keeps_labelled_rows(policy):
    tok, bt = policy.tokenizer, policy.backtrack_id
    ex = inject_errors(PROBLEM, tok, seed=3, kinds=("wrong_result",), span="number")[0]
    seq = labels_from_example(ex, bt, newline_token_ids(tok))
    f = compute_features(policy, [seq, seq], progress=False)
    assert len(f) == 2 * seq.n_labelled and f.hidden.shape == (len(f), 32)
    assert torch.equal(f.labels[: seq.n_labelled], torch.tensor([v for v in seq.labels if v != IGNORE]))
    with pytest.raises(ValueError, match="empty"):
        compute_features(policy, [], progress=False)
    empty = LabelledSequence(seq.ids, seq.prompt_len, (IGNORE,) * len(seq.ids), seq.step_end, "x", "injected")
    with pytest.raises(ValueError, match="label set is empty"):
        compute_features(policy, [empty], progress=False)


def test_save_load_and_refusals(policy, tmp_path):
    head = _head(policy)
    head.save(tmp_path / "v")
    loaded = load_verifier(tmp_path / "v", policy)
    x = torch.randn(5, 32)
    torch.testing.assert_close(loaded.score(x), head.score(x))
    assert loaded.hidden_size == 32
    other_size = tiny_policy(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    with pytest.raises(ValueError, match="hidden states of size 32 but the policy's are 16"):
        load_verifier(tmp_path / "v", other_size)
    other_tok = tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    other_tok.tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="another tokenizer"):
        load_verifier(tmp_path / "v", other_tok)
    with pytest.raises(FileNotFoundError, match="not a verifier folder"):
        load_verifier(tmp_path / "missing", policy)


def test_score_validates_input(policy):
    head = _head(policy)
    assert head.score(torch.randn(3, 32, dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="another policy"):
        head.score(torch.randn(3, 16))
    bad = torch.randn(3, 32)
    bad[1, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf in 1 of 3 rows"):
        head.score(bad)
    with pytest.raises(ValueError, match="hidden_size"):
        VerifierHead(0)
