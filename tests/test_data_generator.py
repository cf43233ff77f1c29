"""The built-in generator: determinism, disjoint splits, sizes, correctness, difficulty knobs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.data import check_steps, extract_answer, format_prompt, generate_problems
from policy.data.generator import Difficulty
from policy.data.grading import parse_annotations


def test_deterministic_and_seeded():
    a, b = generate_problems(50, seed=3), generate_problems(50, seed=3)
    assert a == b
    assert a != generate_problems(50, seed=4)
    assert generate_problems(20, seed=3) == a[:20]  # a prefix does not depend on n


def test_splits_are_disjoint():
    questions = {s: {p.question for p in generate_problems(n, split=s)}
                 for s, n in (("train", 2000), ("validation", 300), ("test", 300))}
    assert len(questions["train"]) == 2000  # distinct within a split
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    # Disjoint across seeds too: split membership depends only on the question text.
    assert not questions["train"] & {p.question for p in generate_problems(300, seed=9, split="test")}


def test_default_problems_are_short_correct_and_gsm8k_form():
    problems = generate_problems(1000)
    for p in problems:
        lines = p.solution.split("\n")
        assert lines[-1] == f"#### {p.answer}" and extract_answer(p.solution) == p.answer
        assert check_steps(p.solution).ok
        annotations = parse_annotations(p.solution)
        assert 2 <= len(annotations) <= 3 and annotations[-1].result == p.answer
        assert len(p.question) <= 200
        assert len(format_prompt(p.question)) + len(p.solution) < 400  # well under 768 characters
        assert 0 <= int(p.answer) <= 999 and all(len(a.result) <= 3 for a in annotations)
    assert len({p.question.split()[3] for p in problems}) >= 5  # several themes and wordings


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 3), st.integers(1, 10), st.integers(1, 40),
       st.sets(st.sampled_from("+-*/"), min_size=1), st.integers(0, 10**6))
def test_difficulty_knobs(min_steps, extra, lo, width, ops, seed):
    ops = tuple(sorted(ops))
    if "+" not in ops and "*" not in ops:
        with pytest.raises(ValueError):
            Difficulty(ops=ops)
        return
    knobs = dict(min_steps=min_steps, max_steps=min_steps + extra, min_operand=lo, max_operand=lo + width,
                 max_result=10_000, ops=ops)
    for p in generate_problems(5, seed=seed, **knobs):
        annotations = parse_annotations(p.solution)
        assert min_steps <= len(annotations) <= min_steps + extra
        assert check_steps(p.solution).ok
        assert all(op in ops for a in annotations for op in "+-/" if op in a.expr)


@pytest.mark.parametrize("knobs", [dict(min_steps=3, max_steps=2), dict(min_operand=5, max_operand=5),
                                   dict(ops=("^",)), dict(max_result=3), dict(steps=2), dict(max_factor=1)])
def test_bad_difficulty(knobs):
    with pytest.raises((ValueError, TypeError)):
        generate_problems(1, **knobs)


def test_bad_split():
    with pytest.raises(ValueError, match="unknown split"):
        generate_problems(1, split="dev")
