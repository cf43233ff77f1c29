"""Grading: final-answer extraction and comparison, and a step checker for calculator annotations.

The step checker evaluates every ``<<expr=result>>`` with a small ``ast`` evaluator (numbers,
``+ - * / // % **``, parentheses, unary minus; no names, no calls) in exact rational arithmetic.

GSM8K quirks, and how they are treated so that the shipped train and test files have no false
errors (a test checks all 27,998 annotations):

- float artefacts in the reference (``70*.01*90=63``): exact rationals make them exact;
- a written result that is itself an expression (``3/4=3/4``) is evaluated like the left side;
- a decimal result may be rounded to the decimals written (``10/3=3.33``: |w - v| <= 0.5·10^-d);
  an integer result must be exact, so ``10/3=3`` is an error;
- the text after ``>>`` may format the value differently (``22,500``); only the annotation counts;
- thousands separators (``1,000``) are read as in prose, in expressions and results alike.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from transformers import PreTrainedTokenizerBase

__all__ = [
    "ANNOTATION_RE",
    "Annotation",
    "StepCheck",
    "StepError",
    "answers_match",
    "check_steps",
    "evaluate",
    "extract_answer",
    "format_number",
    "parse_annotations",
    "parse_number",
]

ANNOTATION_RE = re.compile(r"<<([^<>\n]*)>>")
_NUMBER_RE = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MAX_POW = 64  # |exponent| and result size caps: a checker fed garbage must not hang


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` (commas allowed, ``$``/units ignored), exactly, or ``None``."""
    m = _NUMBER_RE.search(text.replace("−", "-"))
    if m is None:
        return None
    digits = m.group(0).replace(",", "")
    try:
        return Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(value: Fraction | int | float) -> str:
    """Canonical text of a number: ``24``, ``-3``, ``2.5`` (at most 6 decimals, no trailing zeros)."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_answer(text: str) -> str | None:
    """The normalized final answer after the last ``####`` (``"#### $1,234.50 dollars"`` → ``"1234.5"``).

    ``None`` when there is no ``####`` or no number after it.
    """
    if not isinstance(text, str) or "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip().splitlines()
    value = parse_number(tail[0]) if tail else None
    return None if value is None else format_number(value)


def answers_match(a: object, b: object) -> bool:
    """True when two answers (strings like ``"$1,200"``, numbers, or ``None``) are the same number."""
    def value(x: object) -> Fraction | None:
        if x is None or isinstance(x, bool):
            return None
        if isinstance(x, (int, float, Fraction)):
            return Fraction(x)
        return parse_number(str(x)) if isinstance(x, str) else None

    va, vb = value(a), value(b)
    if va is None or vb is None:
        return False
    return abs(va - vb) <= Fraction(1, 10**6) * max(1, abs(vb))


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            if b.denominator != 1 or abs(b) > _MAX_POW or abs(a) > 10**12:
                raise ValueError("exponent must be a small integer")
            if a == 0 and b < 0:
                raise ValueError("division by zero")
            return a**b.numerator
        if type(node.op) in _BINOPS:
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
                raise ValueError("division by zero")
            return _BINOPS[type(node.op)](a, b)
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def evaluate(expr: str) -> Fraction:
    """Evaluate an arithmetic expression exactly; ``ValueError`` for anything else (names, calls...)."""
    if not isinstance(expr, str) or not expr.strip() or len(expr) > 200:
        raise ValueError(f"not an arithmetic expression: {expr!r}")
    try:
        # Thousands separators ("1,000") are allowed; any other comma is not arithmetic.
        tree = ast.parse(_THOUSANDS.sub("", expr.strip()).replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        raise ValueError(f"not an arithmetic expression: {expr!r}") from None
    return _eval_node(tree)


@dataclass(frozen=True)
class Annotation:
    """One ``<<expr=result>>`` in a solution. Char offsets index the solution text:
    ``span`` covers ``<<...>>``, ``expr_span`` the expression, ``result_span`` the written result.
    ``step`` is the 0-based line index."""

    step: int
    text: str
    expr: str
    result: str
    span: tuple[int, int]
    expr_span: tuple[int, int]
    result_span: tuple[int, int]


def parse_annotations(solution: str) -> list[Annotation]:
    """All annotations in ``solution`` with their offsets. An annotation without exactly one
    ``=`` gets ``expr == text`` and an empty ``result`` (the checker calls it malformed)."""
    out = []
    line_starts = [0] + [i + 1 for i, c in enumerate(solution) if c == "\n"]
    for m in ANNOTATION_RE.finditer(solution):
        text, start = m.group(1), m.start(1)
        step = sum(1 for s in line_starts if s <= m.start()) - 1
        if text.count("=") == 1:
            eq = text.index("=")
            expr, result = text[:eq], text[eq + 1 :]
            expr_span, result_span = (start, start + eq), (start + eq + 1, m.end(1))
        else:
            expr, result, expr_span, result_span = text, "", (start, m.end(1)), (m.end(1), m.end(1))
        out.append(Annotation(step, text, expr, result, (m.start(), m.end()), expr_span, result_span))
    return out


@dataclass(frozen=True)
class StepError:
    """The first wrong annotation. ``kind``: ``"wrong_value"`` (the written result differs from
    the expression's value) or ``"malformed"`` (unparsable, or ``<<`` without ``>>``).
    ``expected`` is the value's text (``None`` when malformed); ``char_span`` covers the written
    result (the whole annotation when malformed); ``token_span`` is ``[start, end)`` in the
    solution's token ids when a tokenizer was given."""

    step: int
    annotation: str
    kind: str
    expected: str | None
    written: str
    char_span: tuple[int, int]
    token_span: tuple[int, int] | None = None


@dataclass(frozen=True)
class StepCheck:
    """Result of ``check_steps``: ``n_annotations`` checked, every ``errors`` entry in order."""

    n_annotations: int
    errors: tuple[StepError, ...]

    @property
    def first_error(self) -> StepError | None:
        return self.errors[0] if self.errors else None

    @property
    def ok(self) -> bool:
        return not self.errors


def _matches(written: Fraction, expected: Fraction, written_text: str) -> bool:
    if abs(written - expected) <= Fraction(1, 10**9) * max(1, abs(expected)):
        return True
    decimals = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", written_text)
    # A decimal result may be the value rounded to the decimals written (10/3=3.33).
    return decimals is not None and abs(written - expected) <= Fraction(1, 2 * 10 ** len(decimals.group(1)))


def _check_one(a: Annotation) -> StepError | None:
    def malformed() -> StepError:
        return StepError(a.step, a.text, "malformed", None, a.result, a.span)

    if not a.result.strip():
        return malformed()
    try:
        expected = evaluate(a.expr)
        written = evaluate(a.result)
    except (ValueError, ZeroDivisionError, OverflowError):
        return malformed()
    if _matches(written, expected, a.result):
        return None
    return StepError(a.step, a.text, "wrong_value", format_number(expected), a.result, a.result_span)


def _token_span(solution: str, span: tuple[int, int], tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    enc = tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True)
    ends, end = [], 0
    for _, e in enc["offset_mapping"]:
        end = max(end, e)
        ends.append(end)
    first = next((i for i, e in enumerate(ends) if e > span[0]), len(ends))
    last = next((i + 1 for i, e in enumerate(ends) if e >= span[1]), len(ends))
    return first, max(last, first + 1) if first < len(ends) else first


def check_steps(solution: str, tokenizer: PreTrainedTokenizerBase | None = None) -> StepCheck:
    """Check every calculator annotation of ``solution``; ``.first_error`` is the first wrong one.

    Never raises on text (garbage gives malformed errors or no annotations); ``ValueError`` only
    when ``solution`` is not a string. A ``<<`` with no closing ``>>`` on its line is malformed.
    """
    if not isinstance(solution, str):
        raise ValueError(f"check_steps needs the solution text, got {type(solution).__name__}")
    annotations = parse_annotations(solution)
    errors = [e for e in map(_check_one, annotations) if e is not None]
    covered = {a.span[0] for a in annotations}
    for m in re.finditer(r"<<", solution):
        if m.start() not in covered and not any(a.span[0] < m.start() < a.span[1] for a in annotations):
            step = solution.count("\n", 0, m.start())
            end = solution.find("\n", m.start())
            end = len(solution) if end < 0 else end
            errors.append(StepError(step, solution[m.start() : end], "malformed", None, "", (m.start(), end)))
    errors.sort(key=lambda e: e.char_span[0])
    if tokenizer is not None:
        errors = [
            StepError(e.step, e.annotation, e.kind, e.expected, e.written, e.char_span,
                      _token_span(solution, e.char_span, tokenizer))
            for e in errors
        ]
    return StepCheck(n_annotations=len(annotations), errors=tuple(errors))
