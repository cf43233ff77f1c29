"""Error injection: a problem and a tokenizer → segmented examples in token-id space.

The clean ids are ``encode_problem``'s. For each error, the wrong solution text (``corrupt.py``)
is tokenized whole; it shares a token prefix of length ``j`` with the clean solution, and the
error tokens are the wrong solution's tokens ``j .. j_end`` (``j_end`` set by ``span``). The
example is then ``clean[:j] + error + ⟨b⟩×k + clean[j:]`` with ``k = j_end - j``, so the
backspaces give back the clean ids exactly, for any tokenizer, with no decode-then-encode.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Literal

from transformers import PreTrainedTokenizerBase

from policy.backtrack import backtrack_token_id
from policy.data.corrupt import ERROR_KINDS, Corruption, corrupt, error_sites
from policy.data.grading import check_steps
from policy.data.problems import Problem, encode_problem
from policy.data.segments import Example, Segment, check_example
from search.knobs import knob

__all__ = ["SPANS", "InjectConfig", "inject_errors", "require_backtrack_id", "token_ends"]

SPANS = ("token", "number", "step")


@dataclass(frozen=True, kw_only=True)
class InjectConfig:
    """Knobs of ``inject_errors`` (and, through ``DPOConfig``, of ``dpo_pairs``)."""

    kinds: tuple[str, ...] = knob(ERROR_KINDS, f"error kinds to draw from, uniformly: some of {', '.join(ERROR_KINDS)}")
    span: Literal["token", "number", "step"] = knob(
        "number", "where the error ends: the first wrong token, the end of the wrong number, or the end of the "
        "step (the rest of the step recomputed from the error)")
    examples_per_problem: int = knob(1, "examples drawn per problem, >= 1")
    clean_share: float = knob(0.0, "probability in [0, 1] that an example is the clean solution (so the "
                              "per-example error rate is 1 - clean_share)")
    step_error_rate: float = knob(0.0, "in [0, 1]: each later annotated step also gets an error with this "
                                  "probability (the first error site is always drawn)")
    max_errors: int = knob(1, "most errors in one example, >= 1")

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        if not kinds or any(k not in ERROR_KINDS for k in kinds):
            raise ValueError(f"kinds must be a non-empty subset of {ERROR_KINDS}, got {self.kinds!r}")
        object.__setattr__(self, "kinds", kinds)
        if self.span not in SPANS:
            raise ValueError(f"span must be one of {SPANS}, got {self.span!r}")
        if self.examples_per_problem < 1 or self.max_errors < 1:
            raise ValueError("examples_per_problem and max_errors must be >= 1")
        for name in ("clean_share", "step_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def config_from(cls, knobs: dict):
    """Build a config dataclass from keyword knobs, naming unknown ones."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(knobs) - names)
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    return cls(**knobs)


def require_backtrack_id(tokenizer: PreTrainedTokenizerBase) -> int:
    bt = backtrack_token_id(tokenizer)
    if bt is None:
        raise ValueError("the tokenizer has no ⟨b⟩ token; call policy.add_backtrack_token(model, tokenizer) first")
    return bt


def token_ends(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """``(ids, ends)``: the ids of ``text`` and, per token, the char offset its text ends at
    (a running maximum, so offsets trimmed by a post-processor cannot go backwards)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends, end = [], 0
    for _, e in enc["offset_mapping"]:
        end = max(end, e)
        ends.append(end)
    return list(enc["input_ids"]), ends


def first_token_reaching(ends: list[int], char: int) -> int:
    """Index of the first token whose text ends at or after ``char`` (``len(ends)`` if none)."""
    return next((i for i, e in enumerate(ends) if e >= char), len(ends))


def error_tokens(clean: list[int], c: Corruption, span: str,
                 tokenizer: PreTrainedTokenizerBase) -> tuple[int, list[int], list[int], list[int]] | None:
    """Tokenize a corruption: ``(j, error_ids, wrong_ids, wrong_ends)``; ``error_ids`` are
    ``wrong_ids[j:j_end]``. ``clean`` is the clean solution's ids without EOS."""
    wrong, ends = token_ends(tokenizer, c.text)
    j = next((i for i, (x, y) in enumerate(zip(clean, wrong)) if x != y), min(len(clean), len(wrong)))
    end_char = {"token": c.div + 1, "number": c.number_end, "step": c.step_end}[span]
    j_end = max(j + 1, first_token_reaching(ends, min(end_char, len(c.text))) + 1)
    if j >= len(wrong) or j_end > len(wrong):
        return None
    return j, wrong[j:j_end], wrong, ends


def _draw_sites(sites: list, cfg: InjectConfig, rng: random.Random) -> list:
    first = rng.randrange(len(sites))
    chosen = [sites[first]]
    for s in sites[first + 1 :]:
        if len(chosen) < cfg.max_errors and s.step > chosen[-1].step and rng.random() < cfg.step_error_rate:
            chosen.append(s)
    return chosen


def one_error(problem: Problem, site, cfg: InjectConfig, rng: random.Random) -> Corruption | None:
    for kind in rng.sample(cfg.kinds, len(cfg.kinds)):  # the drawn kind, else another that applies
        for _ in range(4):  # a few redraws: a slip can cancel out or go negative
            c = corrupt(problem, site, kind, rng)
            if c is not None:
                return c
    return None


def assemble(prompt: list[int], clean: list[int], errors: list[tuple[int, list[int]]], bt: int) -> tuple[list[int], list[int]]:
    """``(input_ids, segments)`` of ``prompt + clean`` with each ``(j, error_ids)`` inserted before
    clean token ``j`` and followed by its ⟨b⟩-run; ``j`` must increase strictly."""
    ids, seg, pos = list(prompt), [Segment.PROMPT] * len(prompt), 0
    for j, err in errors:
        ids += clean[pos:j] + err + [bt] * len(err)
        seg += [Segment.CLEAN if pos == 0 else Segment.CORRECTION] * (j - pos)
        seg += [Segment.ERROR] * len(err) + [Segment.BACKTRACK] * len(err)
        pos = j
    ids += clean[pos:]
    seg += [Segment.CLEAN if not errors else Segment.CORRECTION] * (len(clean) - pos)
    return ids, [int(s) for s in seg]


def inject_errors(problem: Problem, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **knobs) -> list[Example]:
    """Segmented examples of ``problem``: its clean solution with injected errors, each error
    followed by a ⟨b⟩-run deleting exactly its tokens and by the clean solution from there.
    ``knobs`` are ``InjectConfig`` fields. Deterministic in ``(seed, problem.id, knobs)``.
    Raises ``ValueError`` naming the problem when its reference solution fails the step checker.

    Worked example (the char tokenizer with ⟨b⟩ added; ``render_example`` draws ⟨b⟩ as ⌫, EOS
    as ∎, newline as ⏎; tags P=PROMPT C=CLEAN E=ERROR B=BACKTRACK R=CORRECTION)::

        problem: question "Ann has 3 bags of 4 pens. How many pens?"
                 solution "Ann has <<3*4=12>>12 pens.\\n#### 12"
        inject_errors(problem, tok, seed=3, kinds=("wrong_result",), span="number")
        ids:  Question: Ann has 3 bags of 4 pens. How many pens?⏎Answer:⏎Ann has <<3*4=13⌫2>>12 pens.⏎#### 12∎
        tags: PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPCCCCCCCCCCCCCCCEBRRRRRRRRRRRRRRRRRRRR

    The slip wrote 13 for 12; the texts share "1", so the error is the one token "3" (k = 1)
    and the correction resumes at "2". ``input_ids`` has one id
    per character shown; ``clean_ids`` is the same line with "3⌫" removed.
    """
    cfg = config_from(InjectConfig, knobs)
    bt = require_backtrack_id(tokenizer)
    check = check_steps(problem.solution)
    if check.first_error is not None:
        raise ValueError(f"problem {problem.id}: reference solution fails the step checker: {check.first_error}")
    prompt, solution = encode_problem(problem, tokenizer)
    clean = solution[:-1]  # without EOS: corruptions never touch it
    sites = error_sites(problem.solution)
    rng = random.Random(f"{seed}:{problem.id}")
    examples = []
    for _ in range(cfg.examples_per_problem):
        errors, kinds, first_step = [], [], None
        if sites and rng.random() >= cfg.clean_share:
            for site in _draw_sites(sites, cfg, rng):
                c = one_error(problem, site, cfg, rng)
                tokens = None if c is None else error_tokens(clean, c, cfg.span, tokenizer)
                if tokens is None or (errors and tokens[0] <= errors[-1][0]):
                    continue
                errors.append((tokens[0], tokens[1]))
                kinds.append(c.kind)
                first_step = c.step if first_step is None else first_step
        ids, seg = assemble(prompt, solution, errors, bt)
        ex = Example(tuple(ids), tuple(seg), len(prompt), tuple(prompt + solution), problem.id,
                     "+".join(kinds) or None, first_step)
        check_example(ex, bt)
        examples.append(ex)
    return examples
