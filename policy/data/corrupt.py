"""Text-level errors: one wrong calculator step, carried forward to the final answer.

``corrupt(problem, step, kind, rng)`` returns the whole wrong solution (later steps recomputed
from the wrong value, the ``####`` line updated) plus the char offsets the injector needs: where
it first differs from the clean solution, where the wrong number ends and where the step ends.
Token ids are made from these texts by ``inject.py``; nothing here tokenizes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction

from policy.data.grading import Annotation, evaluate, extract_answer, format_number, parse_annotations
from policy.data.problems import Problem

__all__ = ["ERROR_KINDS", "Corruption", "corrupt", "error_sites", "slip_number"]

ERROR_KINDS = ("wrong_result", "wrong_operand", "wrong_operator", "wrong_quantity")
_NUM = re.compile(r"(?<![\d.])(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_OPERATOR = re.compile(r"(?<=[\d)\s])\s*([+\-*/])\s*(?=[\d(.\s])")


@dataclass(frozen=True)
class Corruption:
    """A wrong solution. ``div``: first char index where ``text`` differs from the clean solution;
    ``number_end``: end of the wrong number (or operator) in ``text``; ``step_end``: end of the
    erroneous line in ``text``, its newline included. ``answer``: the final answer of ``text``."""

    kind: str
    step: int
    text: str
    div: int
    number_end: int
    step_end: int
    answer: str | None


def error_sites(solution: str) -> list[Annotation]:
    """Annotations that can carry an injected error: well formed, correct, not on the last line."""
    sites = []
    last_line = solution.count("\n")
    for a in parse_annotations(solution):
        if a.step == last_line or not a.result.strip():
            continue
        try:
            if evaluate(a.expr) == evaluate(a.result.replace(",", "")):
                sites.append(a)
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
    return sites


def slip_number(written: str, rng: random.Random) -> str | None:
    """A plausible arithmetic slip of a written number: one digit off by one, a carry error
    (±1 in the digit left of a random position), or two adjacent digits swapped."""
    sign, body = ("-", written[1:]) if written.startswith("-") else ("", written)
    digits = [i for i, c in enumerate(body) if c.isdigit()]
    if not digits:
        return None
    for _ in range(10):
        chars = list(body)
        how = rng.choice(("digit", "carry", "swap"))
        if how == "swap" and len(digits) >= 2:
            k = rng.randrange(len(digits) - 1)
            i, j = digits[k], digits[k + 1]
            chars[i], chars[j] = chars[j], chars[i]
        else:
            pos = digits[rng.randrange(len(digits) - 1)] if how == "carry" and len(digits) >= 2 else rng.choice(digits)
            d = int(chars[pos]) + rng.choice((-1, 1))
            if not 0 <= d <= 9 or (d == 0 and pos == digits[0] and len(digits) > 1):
                continue
            chars[pos] = str(d)
        out = "".join(chars)
        if out != body and Fraction(out) != Fraction(body):
            return sign + out
    return None


def _expr_numbers(a: Annotation) -> list[re.Match]:
    return list(_NUM.finditer(a.expr))


def _wrong_expr(a: Annotation, kind: str, question: str, rng: random.Random) -> tuple[str, int, int] | None:
    """A wrong expression for ``a`` as (expr, first changed index, end of the changed part)."""
    expr = a.expr
    if kind == "wrong_operator":
        ops = list(_OPERATOR.finditer(expr))
        if not ops:
            return None
        m = rng.choice(ops)
        new = rng.choice([o for o in "+-*" if o != m.group(1)])
        return expr[: m.start(1)] + new + expr[m.end(1) :], m.start(1), m.start(1) + 1
    nums = _expr_numbers(a)
    if not nums:
        return None
    m = rng.choice(nums)
    old = Fraction(m.group(0).replace(",", ""))
    if kind == "wrong_quantity":
        pool = {format_number(Fraction(x.group(0).replace(",", ""))) for x in _NUM.finditer(question)}
        pool.discard(format_number(old))
        if not pool:
            return None
        new = rng.choice(sorted(pool))
    else:  # wrong_operand: a neighbouring value or a digit slip
        new = slip_number(m.group(0).replace(",", ""), rng) if rng.random() < 0.5 else format_number(old + rng.choice((-2, -1, 1, 2)))
        if new is None or Fraction(new) <= 0:
            return None
    out = expr[: m.start()] + new + expr[m.end() :]
    first = next((i for i, (x, y) in enumerate(zip(expr, out)) if x != y), min(len(expr), len(out)))
    return out, first, m.start() + len(new)


def _carry(lines: list[str], start_line: int, start_col: int, mapping: dict[Fraction, Fraction]) -> list[str]:
    """Rewrite ``lines`` from (``start_line``, ``start_col``) on: numbers equal to a changed value
    take the new value; annotations are recomputed (adding their own changes to ``mapping``)."""
    out = list(lines)
    for li in range(start_line, len(lines)):
        line = lines[li]
        col = start_col if li == start_line else 0
        head, rest = line[:col], line[col:]
        pieces, pos = [], 0
        for m in re.finditer(r"<<([^<>\n]*)>>|" + _NUM.pattern, rest):
            pieces.append(rest[pos : m.start()])
            if m.group(1) is not None and m.group(1).count("=") == 1:
                expr, res = m.group(1).split("=")
                new_expr = _NUM.sub(lambda x: _swap(x.group(0), mapping), expr)
                try:
                    old_v, new_v = evaluate(res.replace(",", "")), evaluate(new_expr)
                except (ValueError, ZeroDivisionError, OverflowError):
                    old_v = new_v = None
                if old_v is not None and old_v != new_v:
                    mapping[old_v] = new_v
                new_res = format_number(new_v) if old_v is not None and old_v != new_v else res
                pieces.append(f"<<{new_expr}={new_res}>>")
            elif m.group(1) is not None:
                pieces.append(m.group(0))
            else:
                pieces.append(_swap(m.group(0), mapping))
            pos = m.end()
        pieces.append(rest[pos:])
        out[li] = head + "".join(pieces)
    return out


def _swap(number: str, mapping: dict[Fraction, Fraction]) -> str:
    v = Fraction(number.replace(",", ""))
    return format_number(mapping[v]) if v in mapping else number


def corrupt(problem: Problem, site: Annotation, kind: str, rng: random.Random) -> Corruption | None:
    """Put one ``kind`` error into the annotation ``site`` of ``problem.solution``; ``None`` when
    the kind does not apply there (no operator, no other quantity in the question...)."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; choose from {', '.join(ERROR_KINDS)}")
    sol = problem.solution
    old_value = evaluate(site.expr)
    if kind == "wrong_result":
        new_res = slip_number(site.result.strip().replace(",", ""), rng)
        if new_res is None:
            return None
        new_expr, first, number_end = site.expr, len(site.expr) + 1, len(site.expr) + 1 + len(new_res)
    else:
        wrong = _wrong_expr(site, kind, problem.question, rng)
        if wrong is None:
            return None
        new_expr, first, number_end = wrong
        try:
            value = evaluate(new_expr)
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
        if value == old_value or value < 0:
            return None
        new_res = format_number(value)
    inner = f"{new_expr}={new_res}"
    line_start = sol.rfind("\n", 0, site.span[0]) + 1
    lines = sol.split("\n")
    line = lines[site.step]
    a0, a1 = site.span[0] - line_start, site.span[1] - line_start
    new_line = line[:a0] + f"<<{inner}>>" + line[a1:]
    mapping = {old_value: Fraction(new_res)}
    lines[site.step] = new_line
    lines = _carry(lines, site.step, a0 + len(inner) + 4, mapping)
    text = "\n".join(lines)
    ann_start = site.span[0] + 2  # first char inside << >>
    div = next((i for i, (x, y) in enumerate(zip(sol, text)) if x != y), min(len(sol), len(text)))
    if div < ann_start + first - 1 or div >= ann_start + number_end:
        return None  # the edit did not change what we meant to change (e.g. "7" -> "7.0")
    step_end = line_start + len(lines[site.step]) + 1
    return Corruption(kind, site.step, text, div, ann_start + number_end, step_end, extract_answer(text))
