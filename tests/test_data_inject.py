"""Error injection: the worked example, the backspace round trip on GSM8K with a char and a
byte-level BPE tokenizer, knobs, property tests on generated problems, bad input."""

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from policy import add_backtrack_token, apply_backspaces, char_tokenizer
from policy.data import (
    ERROR_KINDS,
    Problem,
    Segment,
    encode_problem,
    generate_problems,
    inject_errors,
    load_gsm8k,
    render_example,
)


@functools.lru_cache(maxsize=1)
def char_tok():
    tok = char_tokenizer()
    return tok, add_backtrack_token(None, tok)


@functools.lru_cache(maxsize=1)
def bpe_tok():
    """A small byte-level BPE trained on GSM8K text, wrapped as a transformers tokenizer, with ⟨b⟩."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [p.question + "\n" + p.solution for p in load_gsm8k("train")[:1500]]
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return tok, add_backtrack_token(None, tok)


def assert_round_trip(examples, tok, bt, problem):
    prompt, solution = encode_problem(problem, tok)
    for ex in examples:
        assert list(ex.clean_ids) == prompt + solution
        assert apply_backspaces(list(ex.input_ids), bt, prompt_len=ex.prompt_len) == list(ex.clean_ids)
        assert len(ex.segments) == len(ex.input_ids) and set(ex.segments) <= set(map(int, Segment))
        seg = list(ex.segments)
        assert seg[: ex.prompt_len] == [Segment.PROMPT] * ex.prompt_len and ex.prompt_len == len(prompt)
        assert seg.count(Segment.ERROR) == seg.count(Segment.BACKTRACK)
        assert [t == bt for t in ex.input_ids] == [s == Segment.BACKTRACK for s in seg]
        if ex.error_kind is None:
            assert seg.count(Segment.ERROR) == 0
        else:
            assert seg.count(Segment.ERROR) > 0 and ex.input_ids != ex.clean_ids
            assert seg[-1] == Segment.CORRECTION and ex.input_ids[-1] == tok.eos_token_id


def test_worked_example_of_the_docstring():
    tok, bt = char_tok()
    problem = Problem(question="Ann has 3 bags of 4 pens. How many pens?",
                      solution="Ann has <<3*4=12>>12 pens.\n#### 12", answer="12", id="ann")
    (ex,) = inject_errors(problem, tok, seed=3, kinds=("wrong_result",), span="number")
    text, tags = render_example(ex.input_ids, ex.segments, tok, bt)
    assert text == "Question: Ann has 3 bags of 4 pens. How many pens?⏎Answer:⏎Ann has <<3*4=13⌫2>>12 pens.⏎#### 12∎"
    assert tags == "P" * 59 + "C" * 15 + "EB" + "R" * 20
    assert (ex.error_kind, ex.error_step, ex.prompt_len) == ("wrong_result", 0, 59)
    assert tok.decode(ex.clean_ids[ex.prompt_len:-1]) == problem.solution
    # The docstring shows the same lines.
    doc = inject_errors.__doc__
    assert text in doc and tags in doc


def _round_trip_over(problems, tok, bt) -> int:
    """Round-trip every problem; returns how many examples were checked."""
    spans = ("token", "number", "step")
    kinds_seen = set()
    checked = 0
    for i, p in enumerate(problems):
        examples = inject_errors(p, tok, seed=i, span=spans[i % 3], examples_per_problem=2,
                                 step_error_rate=0.5, max_errors=2, clean_share=0.1)
        assert_round_trip(examples, tok, bt, p)
        checked += len(examples)
        kinds_seen.update(k for ex in examples if ex.error_kind for k in ex.error_kind.split("+"))
    assert kinds_seen == set(ERROR_KINDS)
    return checked


@pytest.mark.parametrize("which", ["char", "bpe"])
def test_round_trip_gsm8k_sample(which):
    tok, bt = char_tok() if which == "char" else bpe_tok()
    problems = load_gsm8k("train")[:150] + load_gsm8k("test")[:150]
    assert _round_trip_over(problems, tok, bt) >= len(problems)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["char", "bpe"])
def test_round_trip_all_gsm8k(which):
    """All 7,473 train and 1,319 test problems, every error kind and span."""
    tok, bt = char_tok() if which == "char" else bpe_tok()
    assert _round_trip_over(load_gsm8k("train") + load_gsm8k("test"), tok, bt) >= 7473 + 1319


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(["token", "number", "step"]),
       st.sampled_from(ERROR_KINDS), st.booleans())
def test_generated_problems_round_trip(problem_seed, seed, span, kind, use_bpe):
    tok, bt = bpe_tok() if use_bpe else char_tok()
    (p,) = generate_problems(1, seed=problem_seed)
    examples = inject_errors(p, tok, seed=seed, span=span, kinds=(kind,))
    assert_round_trip(examples, tok, bt, p)


def test_spans_token_number_step():
    tok, bt = char_tok()
    p = Problem(question="Q?", solution="A <<12*3=36>>36 pens.\nB <<36+4=40>>40.\n#### 40", answer="40", id="s")
    errs = {}
    for span in ("token", "number", "step"):
        (ex,) = inject_errors(p, tok, seed=1, kinds=("wrong_result",), span=span)
        errs[span] = "".join(tok.decode([t]) for t, s in zip(ex.input_ids, ex.segments) if s == Segment.ERROR)
    assert len(errs["token"]) == 1
    assert errs["step"].startswith(errs["number"]) and errs["number"].startswith(errs["token"])
    assert errs["step"].endswith("pens.\n") or errs["step"].endswith(".\n")


def test_clean_share_and_multiple_errors():
    tok, bt = char_tok()
    (p,) = generate_problems(1, seed=5, min_steps=3, max_steps=3)
    clean = inject_errors(p, tok, clean_share=1.0, examples_per_problem=3)
    assert all(ex.error_kind is None and ex.input_ids == ex.clean_ids for ex in clean)
    many = inject_errors(p, tok, seed=2, step_error_rate=1.0, max_errors=3, examples_per_problem=5, span="number")
    assert max(ex.error_kind.count("+") for ex in many) >= 1
    assert_round_trip(many, tok, bt, p)
    assert inject_errors(p, tok, seed=7) == inject_errors(p, tok, seed=7)


def test_bad_input():
    tok, _ = char_tok()
    p = Problem(question="Q?", solution="<<2+2=5>>5\n#### 5", answer="5", id="bad-ref")
    with pytest.raises(ValueError, match="bad-ref"):
        inject_errors(p, tok)
    with pytest.raises(ValueError, match="⟨b⟩"):
        inject_errors(generate_problems(1)[0], char_tokenizer())
    with pytest.raises(ValueError, match="unknown knob"):
        inject_errors(generate_problems(1)[0], tok, rate=0.5)
    with pytest.raises(ValueError, match="span"):
        inject_errors(generate_problems(1)[0], tok, span="line")
    # No annotation to corrupt, unicode, commas and decimals: a clean example, never a crash.
    odd = Problem(question="Über café ☕ costs 1,250.5?", solution="It costs 1,250.5 dollars — ok.\n#### 1,250.5",
                  answer="1250.5", id="odd")
    (ex,) = inject_errors(odd, tok)
    assert ex.error_kind is None and ex.input_ids == ex.clean_ids
    dec = Problem(question="Q 2.5?", solution="<<2.5*1,000=2,500>>2,500 g\n<<2500/1000=2.5>>2.5 kg\n#### 2.5",
                  answer="2.5", id="dec")
    assert_round_trip(inject_errors(dec, tok, examples_per_problem=8, span="step"), tok, char_tok()[1], dec)
