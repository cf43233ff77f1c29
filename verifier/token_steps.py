"""Token-only sibling steps: reference lines and their slipped-result versions, known by their token
ids alone, to teach the step verifier's token path arithmetic.

Most of the built-in policy's wrong steps hold a wrong result inside ``<<a*b=c>>`` (issue 14), and
whether ``c`` is right is a function of the step's digits. The step verifier reads the digits (token
ids and digit places, ``verifier.step_head``), but the labels that come with the policy's features —
its own siblings and the reference steps, one policy forward per problem — are too few for a small
transformer to learn even one-digit facts (``<<9+4=11>>`` scored as likely right as ``<<9+4=13>>``).
These rows cost no policy forward: a line of a reference solution, tokenized, beside ``slips``
versions with its result slipped the way the policy slips (``step_data._slipped_steps``). The
verifier reads them with the policy features zero — exactly what feature dropout shows it on a
share of the policy's own steps — so the checking it learns here is the checking it uses there.

Two slip distributions (``kind``). ``digits`` is the reference steps' (one digit ±1, a carry, a
swap, ±1, ±10; half of them written differently inside and after the annotation). A head trained
on it learns to spot those slips, not the facts: it rated ``<<7-6=3>>`` as likelier right than
``<<7-6=1>>`` and ``<<4*4=12>>`` as ``<<4*4=16>>``, and ordered the policy's own sibling steps with
AUROC 0.85. ``facts`` (the default) slips the way the built-in policy's own wrong steps are wrong,
measured on its verifier's own-step labels (validation-split problems; 4,700 distinct wrong lines):
the result of a neighbouring fact (an operand ±1 or ±2: ``4*4`` → 12, the commonest), the right
result off by 1-10 (1-4 most often), and a share of the digit slips; mostly written alike in both
places. A head trained on these orders the policy's sibling steps with AUROC 0.996.

The problems come from the policy's *training* split: never a held-out or validation question.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from policy.data.corrupt import slip_number
from policy.data.grading import check_steps, evaluate, format_number, parse_annotations
from policy.data.problems import Problem
from verifier.step_data import _slipped_steps, with_result
from verifier.step_head import MAX_PLACE, StepBatch, flat_rows

__all__ = ["SLIP_KINDS", "PackedTokens", "TokenSteps", "fact_slips", "token_steps"]

SLIP_KINDS = ("facts", "digits")
# |wrong - right| of the policy's own wrong results that are no neighbouring fact, 1..10 (training-split labels)
_OFFSETS, _OFFSET_WEIGHTS = tuple(range(1, 11)), (20, 18, 12, 10, 6, 6, 3, 3, 3, 3)
_INTEGER = re.compile(r"(?<![\d.])\d+(?![\d.])")


@dataclass
class TokenSteps:
    """Sibling steps known by their token ids only: per row the ids, the label (1 = wrong), the
    sibling group and the depth (the line's index in its solution, from 1)."""

    ids: list[tuple[int, ...]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def token_steps(tokenizer, problems: Sequence[Problem], *, slips: int = 3, seed: int = 0,
                kind: str = "facts") -> TokenSteps:
    """Every one-annotation line of the problems' reference solutions that the checker accepts
    (label 0), beside up to ``slips`` versions with a wrong result (label 1) of the slip ``kind``
    (``SLIP_KINDS``, module docstring), as one sibling group."""
    if slips < 1:
        raise ValueError(f"slips must be >= 1, got {slips}")
    if kind not in SLIP_KINDS:
        raise ValueError(f"kind must be one of {SLIP_KINDS}, got {kind!r}")
    slip = fact_slips if kind == "facts" else _slipped_steps
    rng = random.Random(f"token-steps:{seed}")
    rows: list[tuple[str, int, int, int]] = []  # (text, label, group, depth)
    n_groups = 0
    for p in problems:
        for depth, line in enumerate((ln + "\n" for ln in p.solution.split("\n")), start=1):
            if check_steps(line).errors:
                continue
            wrong = slip(line, rng, slips)
            if wrong:
                rows += [(text, label, n_groups, depth) for label, text in [(0, line)] + [(1, w) for w in wrong]]
                n_groups += 1
    out = TokenSteps()
    if rows:  # one batched call: far faster than a tokenizer call per line
        encoded = _encode([r[0] for r in rows], tokenizer)
        for (_, label, group, depth), ids in zip(rows, encoded, strict=True):
            out.ids.append(tuple(ids))
            out.labels.append(label)
            out.groups.append(group)
            out.depth.append(depth)
    return out


def fact_slips(line: str, rng: random.Random, n: int) -> list[str]:
    """Up to ``n`` distinct wrong versions of a correct one-annotation line, each a wrong *fact*: the
    result of the expression with one operand ±1 or ±2 (35%), the right result ±1..10 (45%, small
    offsets likelier), or a digit slip of the written result (20%); written alike inside and after
    the annotation 80% of the time, else in one place only. Never a negative result for a
    non-negative one, never the right value again."""
    anns = parse_annotations(line)
    if len(anns) != 1 or not anns[0].result.strip():
        return []
    a = anns[0]
    try:
        right = evaluate(a.expr)
    except (ValueError, ZeroDivisionError, SyntaxError):
        return []
    operands = list(_INTEGER.finditer(a.expr))
    out: list[str] = []
    for _ in range(6 * n):
        if len(out) >= n:
            break
        r = rng.random()
        try:
            if r < 0.35 and operands:
                m, d = rng.choice(operands), rng.choice((-2, -1, 1, 2))
                if int(m.group(0)) + d < 0:
                    continue
                value = evaluate(a.expr[:m.start()] + str(int(m.group(0)) + d) + a.expr[m.end():])
            elif r < 0.8:
                value = right + rng.choices(_OFFSETS, _OFFSET_WEIGHTS)[0] * rng.choice((-1, 1))
            else:
                slipped = slip_number(a.result.strip().replace(",", ""), rng)
                if slipped is None:
                    continue
                value = Fraction(slipped)
        except (ValueError, ZeroDivisionError, SyntaxError):
            continue
        if value == right or (value < 0 <= right):
            continue
        where = "both" if rng.random() < 0.8 else rng.choice(("inside", "after"))
        text = with_result(line, a, format_number(value), where)
        if text != line and text not in out:
            out.append(text)
    return out


def _encode(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of ``texts`` (no special tokens added): through the fast tokenizer's backend in one
    batch where it has one (three times faster than the wrapper's call), else the wrapper."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not any(t in text for text in texts for t in tokenizer.all_special_tokens):
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


class PackedTokens:
    """``TokenSteps`` stored flat, cut as ``collate_steps`` cuts a step (its last ``max_tokens``
    tokens; ``place`` as ``digit_places`` of that tail); ``batch(rows)`` is a ``StepBatch`` whose
    policy features (hidden states, log-probs, entropies) are zero — none were computed. Built with
    array operations, not a loop over rows: a hundred thousand rows pack in well under a second."""

    def __init__(self, steps: TokenSteps, *, hidden_size: int, max_tokens: int, digit_ids: frozenset[int]):
        if not len(steps):
            raise ValueError("no token steps to pack")
        if min(len(ids) for ids in steps.ids) < 1:
            raise ValueError("a token step has no token")
        self.hidden_size = int(hidden_size)
        tails = [ids[-max_tokens:] for ids in steps.ids]
        self.lens = torch.tensor([len(t) for t in tails])
        self.starts = torch.cumsum(self.lens, 0) - self.lens
        ids = np.fromiter((i for t in tails for i in t), dtype=np.int64, count=int(self.lens.sum()))
        digit = np.isin(ids, np.fromiter(digit_ids, dtype=np.int64, count=len(digit_ids)))
        self.ids, self.place = torch.from_numpy(ids), torch.from_numpy(_places(digit, self.starts.numpy()))
        self.depth = torch.tensor([float(d) for d in steps.depth])

    def __len__(self) -> int:
        return len(self.lens)

    def batch(self, rows: Sequence[int]) -> StepBatch:
        r, mask, flat = flat_rows(self.lens, self.starts, rows)
        N, T = mask.shape
        ids = torch.where(mask, self.ids.index_select(0, flat).view(N, T), -1)
        place = torch.where(mask, self.place.index_select(0, flat).view(N, T), 0)
        return StepBatch(torch.zeros(N, T, self.hidden_size), torch.zeros(N, T, 2), mask, self.depth[r], ids, place)


def _places(digit: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``digit_places`` of every row of a flat digit mask (rows begin at ``starts``): each digit's
    place in its run of digits counted from the right, capped at ``MAX_PLACE``; 0 for a non-digit."""
    n = len(digit)
    rev = digit[::-1].astype(np.int64)  # right to left; a run resets at a non-digit and where a row ends
    reset = np.zeros(n, dtype=bool)
    reset[n - 1 - (np.append(starts[1:], n) - 1)] = True  # the last token of each row comes first in rev
    idx = np.arange(n)
    last_break = np.maximum.accumulate(np.where((rev == 0) | reset, idx, -1))
    # count of digits from the break (inclusive when the break is a row end that is a digit)
    cs = np.cumsum(rev)
    base = np.where(last_break >= 0, cs[np.maximum(last_break, 0)] - rev[np.maximum(last_break, 0)], 0)
    run = np.where(rev == 1, cs - base, 0)
    return np.minimum(run, MAX_PLACE)[::-1].copy()
