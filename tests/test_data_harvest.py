"""Examples from the policy's own samples: the checker's first wrong step becomes an example."""

import pytest
from test_data_inject import bpe_tok, char_tok

from policy import apply_backspaces
from policy.data import Problem, Segment, examples_from_samples

PROBLEM = Problem(question="Q?", solution="A <<3*4=12>>12 pens.\nB <<12+5=17>>17 pens.\n#### 17", answer="17", id="h")
SAMPLE = "A <<3*4=12>>12 pens.\nB <<12+5=18>>18 pens.\n#### 18"


@pytest.mark.parametrize("which", ["char", "bpe"])
@pytest.mark.parametrize("span", ["token", "number", "step"])
def test_own_error_becomes_example(which, span):
    tok, bt = char_tok() if which == "char" else bpe_tok()
    sample = tok(SAMPLE, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    right = tok(PROBLEM.solution, add_special_tokens=False)["input_ids"]
    (ex,) = examples_from_samples(PROBLEM, [sample, right], tok, span=span)  # the right sample gives none
    assert (ex.error_kind, ex.error_step) == ("own", 1)
    assert apply_backspaces(list(ex.input_ids), bt, prompt_len=ex.prompt_len) == list(ex.clean_ids)
    clean_text = tok.decode(list(ex.clean_ids[ex.prompt_len:]))
    assert clean_text == "A <<3*4=12>>12 pens.\nB <<12+5=17>>17 pens.\n"
    errors = "".join(tok.decode([t]) for t, s in zip(ex.input_ids, ex.segments) if s == Segment.ERROR)
    assert "8" in errors
    if span == "step":
        assert errors.endswith("18 pens.\n")
    raw = tok.decode([t for t in ex.input_ids[ex.prompt_len:] if t != bt])
    assert raw.startswith("A <<3*4=12>>12 pens.\nB <<12+5=1")


def test_samples_with_backtracks_and_garbage():
    tok, bt = char_tok()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    backtracked = ids("A <<3*4=13") + [bt] + ids("2>>12 pens.\nB <<12+5=16>>16\n")
    (ex,) = examples_from_samples(PROBLEM, [backtracked, ids("garbage <<x=1>> ☕"), ids(""), ids("<<1+1=3")], tok)
    assert ex.error_step == 1 and tok.decode(list(ex.clean_ids[ex.prompt_len:])).endswith("<<12+5=17>>17\n")
    with pytest.raises(ValueError, match="span"):
        examples_from_samples(PROBLEM, [], tok, span="line")
