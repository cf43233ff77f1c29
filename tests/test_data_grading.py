"""Grading: answer extraction, the safe evaluator and the step checker (on all of GSM8K)."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import char_tokenizer
from policy.data import answers_match, check_steps, evaluate, extract_answer, load_gsm8k


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so\n#### 72", "72"),
        ("#### $1,234.50 dollars", "1234.5"),
        ("#### 1,000", "1000"),
        ("#### -5", "-5"),
        ("#### 3.00", "3"),
        ("#### .5 cups", "0.5"),
        ("a #### 1\nb #### 2 apples", "2"),
        ("no marker 42", None),
        ("#### none", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answers_match():
    assert answers_match("1,200", "$1200.00")
    assert answers_match(3, "3.0")
    assert not answers_match("3", "4")
    assert not answers_match(None, "4")
    assert not answers_match("abc", "abc")


@pytest.mark.parametrize("expr, value", [("48/2", 24), ("2**3", 8), ("-(3+4)*2", -14), ("7//2", 3), ("7%4", 3),
                                        (".5*4", 2), ("0.1+0.2", Fraction(3, 10)), ("2*1,000", 2000)])
def test_evaluate_is_exact(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os')", "x+1", "abs(-1)", "2**10000", "1/0", "", "1,00", "(1,2)", "[1]",
                                  "'a'", "True+1", "9**9**9"])
def test_evaluate_refuses_non_arithmetic(expr):
    with pytest.raises(ValueError):
        evaluate(expr)


def test_check_steps_first_error_and_spans():
    sol = "A <<3+4=7>>7\nB <<7*2=15>>15\nC <<15-1=13>>13\n#### 13"
    check = check_steps(sol, char_tokenizer())
    assert check.n_annotations == 3 and len(check.errors) == 2
    err = check.first_error
    assert (err.step, err.kind, err.expected, err.written) == (1, "wrong_value", "14", "15")
    assert sol[slice(*err.char_span)] == "15"
    assert err.token_span == err.char_span  # one token per character
    assert check_steps("A <<3+4=7>>7\n#### 7").first_error is None


@pytest.mark.parametrize(
    "sol, ok",
    [
        ("<<3/4=3/4>>", True),  # GSM8K writes a fraction as the result
        ("<<10/3=3.33>>", True),  # rounded to the decimals written
        ("<<10/3=3.3>>", True),
        ("<<10/3=3.4>>", False),
        ("<<10/3=3>>", False),  # an integer result must be exact
        ("<<70*.01*90=63>>", True),  # a float artefact in the reference
        ("<<1000+234=1,234>>", True),
    ],
)
def test_check_steps_quirks(sol, ok):
    assert check_steps(sol).ok is ok


@pytest.mark.parametrize("sol", ["<<2*x=4>>", "<<1/0=1>>", "<<5+1=6", "<<5+1>>", "<<=>>", "<<1=2=3>>", "<<é=1>>"])
def test_malformed_annotations_are_errors_not_crashes(sol):
    err = check_steps(sol).first_error
    assert err is not None and err.kind == "malformed"


def test_check_steps_refuses_non_text():
    with pytest.raises(ValueError):
        check_steps(None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>=0123456789+-*/.()x #\n,é")), max_size=80))
def test_check_steps_never_crashes_on_garbage(text):
    check = check_steps(text)
    opened = text.count("<<")  # every annotation, and every malformed one, starts at a "<<"
    assert check.n_annotations <= opened and len(check.errors) <= opened
    spans = [e.char_span for e in check.errors]
    assert spans == sorted(spans) and all(text[a:b].startswith("<<") for a, b in spans)
    extract_answer(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(-999, 999), st.integers(1, 999), st.sampled_from("+-*/"))
def test_check_steps_agrees_with_fractions(a, b, op):
    value = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op]
    if value.denominator == 1 if isinstance(value, Fraction) else True:
        written = str(int(value))
        assert check_steps(f"<<{a}{op}{b}={written}>>").ok
        assert not check_steps(f"<<{a}{op}{b}={int(value) + 1}>>").ok


def test_every_gsm8k_annotation_checks():
    """The checker agrees with all 27,998 annotations of the shipped GSM8K train and test files."""
    n = 0
    for split in ("train", "test"):
        for p in load_gsm8k(split):
            check = check_steps(p.solution)
            assert check.ok, (p.id, check.first_error)
            n += check.n_annotations
    assert n == 27_998
