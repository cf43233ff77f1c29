"""Examples from the policy's own mistakes: the step checker finds a sample's first wrong step.

For a sample whose first wrong annotation writes ``R`` where the expression gives ``V``::

    input  = prompt + sample[:d] + sample[d:e] + ⟨b⟩×(e-d) + correction
    clean  = prompt + sample[:d] + correction

``d`` is the token that holds the first character where ``R`` departs from ``V``; ``e`` ends the error span (``span``
as in ``InjectConfig``); ``correction`` is the rest of that step from token ``d``'s first char,
with ``R`` (and a copy of it right after ``>>``) replaced by ``V``, newline included. The example
stops there: what the sample wrote after its wrong step was built on the wrong value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedTokenizerBase

from policy.data.grading import check_steps
from policy.data.inject import SPANS, first_token_reaching, require_backtrack_id
from policy.data.problems import Problem, encode_problem
from policy.data.segments import Example, Segment, check_example
from policy.layout import apply_backspaces

__all__ = ["examples_from_samples"]


def _char_ends(ids: list[int], tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[int]]:
    """The decoded text of ``ids`` and, per token, the char offset its text ends at."""
    text = tokenizer.decode(ids)
    pieces = [tokenizer.decode([t]) for t in ids]
    if "".join(pieces) != text:  # multi-byte characters split across tokens: decode prefixes
        pieces = [tokenizer.decode(ids[: i + 1]) for i in range(len(ids))]
        return text, [len(p) for p in pieces]
    ends, n = [], 0
    for p in pieces:
        n += len(p)
        ends.append(n)
    return text, ends


def _clean_sample(ids: Sequence[int], tokenizer: PreTrainedTokenizerBase, bt: int) -> list[int]:
    ids = [int(t) for t in ids]
    ids = apply_backspaces(ids, bt)  # a sample that backtracked: what it effectively wrote
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return [t for t in ids if t not in special]


def examples_from_samples(problem: Problem, sample_ids: Sequence[Sequence[int]], tokenizer: PreTrainedTokenizerBase,
                          *, span: Literal["token", "number", "step"] = "number") -> list[Example]:
    """One ``Example`` (``error_kind="own"``) per sample in ``sample_ids`` whose first wrong
    annotation is a wrong value; samples with no wrong step, or whose first problem is a
    malformed annotation, give none (so the result may be shorter than the input).

    ``sample_ids``: per sample, the generated solution ids after the prompt (EOS, padding and
    anything after EOS are dropped; ⟨b⟩-runs are applied first).
    """
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}, got {span!r}")
    bt = require_backtrack_id(tokenizer)
    prompt = encode_problem(problem, tokenizer)[0]  # the policy's prompt format, as training encodes it
    examples = []
    for sample in sample_ids:
        ids = _clean_sample(sample, tokenizer, bt)
        text, ends = _char_ends(ids, tokenizer)
        error = check_steps(text).first_error
        if error is None or error.kind != "wrong_value" or error.expected is None:
            continue
        r0, r1 = error.char_span
        same = next((i for i, (a, b) in enumerate(zip(error.written, error.expected)) if a != b),
                    min(len(error.written), len(error.expected)))
        wrong_at = r0 + same  # first wrong char: "18" for "17" goes wrong at the "8"
        d = first_token_reaching(ends, wrong_at + 1)  # the token holding it
        start = ends[d - 1] if d > 0 else 0
        line_end = text.find("\n", r1)
        line_end = len(text) if line_end < 0 else line_end + 1
        end_char = {"token": wrong_at + 1, "number": max(r1, wrong_at + 1), "step": line_end}[span]
        e = max(d + 1, first_token_reaching(ends, end_char) + 1)
        after = text[r1:line_end]
        if after.startswith(">>" + error.written):  # the value repeated after the annotation
            after = ">>" + error.expected + after[2 + len(error.written) :]
        # text[:start] is untouched: start <= wrong_at and ``expected`` shares the chars before it.
        correction = (text[:r0] + error.expected + after)[start:]
        corr_ids = list(tokenizer(correction, add_special_tokens=False)["input_ids"])
        k = e - d
        ex = Example(
            input_ids=tuple(prompt + ids[:e] + [bt] * k + corr_ids),
            segments=tuple([int(Segment.PROMPT)] * len(prompt) + [int(Segment.CLEAN)] * d
                           + [int(Segment.ERROR)] * k + [int(Segment.BACKTRACK)] * k
                           + [int(Segment.CORRECTION)] * len(corr_ids)),
            prompt_len=len(prompt),
            clean_ids=tuple(prompt + ids[:d] + corr_ids),
            problem_id=problem.id,
            error_kind="own",
            error_step=error.step,
        )
        check_example(ex, bt)
        examples.append(ex)
    return examples
