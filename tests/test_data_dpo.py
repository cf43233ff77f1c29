"""DPO pairs: shared prompt, ⟨b⟩-run chosen, carried-forward rejected, no-backtrack pairs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data_inject import bpe_tok, char_tok

from policy import apply_backspaces
from policy.data import (
    ERROR_KINDS,
    Problem,
    answers_match,
    dpo_pairs,
    encode_problem,
    extract_answer,
    generate_problems,
    load_gsm8k,
)


def _check_pair(pair, tok, bt, problem, horizon):
    prompt, solution = encode_problem(problem, tok)
    clean = prompt + solution
    assert list(pair.prompt_ids[: pair.prompt_len]) == prompt
    effective = apply_backspaces(list(pair.prompt_ids + pair.chosen_ids), bt, prompt_len=pair.prompt_len)
    if horizon == "full":
        assert effective == clean and pair.chosen_ids[-1] == tok.eos_token_id
    else:
        assert effective == clean[: len(effective)]
    if pair.kind == "backtrack":
        k = list(pair.chosen_ids).index(next(t for t in pair.chosen_ids if t != bt))
        assert k > 0 and list(pair.chosen_ids[:k]) == [bt] * k
        assert bt not in pair.rejected_ids
        # The prompt ends with the k error tokens that the run deletes.
        assert apply_backspaces(list(pair.prompt_ids) + [bt] * k, bt, prompt_len=pair.prompt_len) == \
            clean[: len(pair.prompt_ids) - k]
        if horizon == "full":
            rejected_text = tok.decode(list(pair.prompt_ids[pair.prompt_len:] + pair.rejected_ids[:-1]))
            assert not answers_match(extract_answer(rejected_text), problem.answer)
    else:
        assert pair.kind == "no_backtrack" and bt not in pair.chosen_ids and pair.rejected_ids[0] == bt
        assert list(pair.prompt_ids) == clean[: len(pair.prompt_ids)]
        assert apply_backspaces(list(pair.prompt_ids + pair.rejected_ids), bt, prompt_len=pair.prompt_len) == effective
    if pair.chosen_ids[-1] == tok.eos_token_id:  # EOS only where the solution ends
        assert effective == clean


def test_pairs_on_a_known_problem():
    tok, bt = char_tok()
    p = Problem(question="Q?", solution="A <<2*3=6>>6\nB <<6+4=10>>10\n#### 10", answer="10", id="k")
    pairs = dpo_pairs(p, tok, seed=0, kinds=("wrong_result",), span="number", examples_per_problem=1)
    assert [q.kind for q in pairs] == ["backtrack", "no_backtrack"]
    back = pairs[0]
    for q in pairs:
        _check_pair(q, tok, bt, p, "full")
    rejected = tok.decode(list(back.prompt_ids[back.prompt_len:] + back.rejected_ids[:-1]))
    assert rejected.count("<<") == 2 and extract_answer(rejected) != "10"
    from policy.data import check_steps
    assert check_steps(rejected).first_error is not None  # the slip is still in the rejected text


@pytest.mark.parametrize("horizon", ["full", "step"])
@pytest.mark.parametrize("span", ["token", "number", "step"])
def test_gsm8k_pairs(span, horizon):
    tok, bt = bpe_tok() if span == "number" else char_tok()
    n = 0
    for i, p in enumerate(load_gsm8k("test")[:60]):
        for pair in dpo_pairs(p, tok, seed=i, span=span, horizon=horizon, examples_per_problem=2):
            _check_pair(pair, tok, bt, p, horizon)
            n += 1
    assert n > 150


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(ERROR_KINDS), st.sampled_from(["full", "step"]),
       st.sampled_from(["token", "number", "step"]))
def test_generated_pairs(seed, kind, horizon, span):
    tok, bt = char_tok()
    (p,) = generate_problems(1, seed=seed)
    pairs = dpo_pairs(p, tok, seed=seed, kinds=(kind,), horizon=horizon, span=span, no_backtrack_share=0.5)
    for pair in pairs:
        _check_pair(pair, tok, bt, p, horizon)


def test_bad_knobs():
    tok, _ = char_tok()
    with pytest.raises(ValueError, match="horizon"):
        dpo_pairs(generate_problems(1)[0], tok, horizon="line")
    assert dpo_pairs(Problem("Q?", "no steps\n#### 3", "3", "none"), tok) == []
