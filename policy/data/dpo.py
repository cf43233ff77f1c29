"""Step-level DPO pairs in token-id space (DESIGN §2).

``backtrack`` pair at an injected error (clean prefix ``clean[:j]``, error ``wrong[j:j_end]``,
``k = j_end - j``)::

    prompt   = question + clean[:j] + wrong[j:j_end]
    chosen   = ⟨b⟩×k + clean[j:]            (the correction and the rest)
    rejected = wrong[j_end:]                (the error carried forward to a wrong final answer)

``no_backtrack`` pair at the same place on the clean solution (``c = j + k``)::

    prompt   = question + clean[:c]
    chosen   = clean[c:]                    (just go on)
    rejected = ⟨b⟩×k + clean[c-k:]          (a needless ⟨b⟩-run that rewrites the same tokens)

With ``horizon="step"`` every continuation stops at the end of the step it is in (its newline
included); EOS closes a continuation only when it reaches the end of the solution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from policy.data.corrupt import error_sites
from policy.data.grading import answers_match, check_steps
from policy.data.inject import (
    InjectConfig,
    config_from,
    error_tokens,
    one_error,
    require_backtrack_id,
    token_ends,
)
from policy.data.problems import Problem, encode_problem
from policy.data.segments import DPOPair
from policy.layout import apply_backspaces
from search.knobs import knob

__all__ = ["DPOConfig", "dpo_pairs"]


@dataclass(frozen=True, kw_only=True)
class DPOConfig(InjectConfig):
    """``InjectConfig`` knobs (``kinds``, ``span``, ``examples_per_problem`` = backtrack pairs per
    problem) plus the two below."""

    horizon: Literal["full", "step"] = knob("full", "a pair continues to the end of the solution, or of the step")
    no_backtrack_share: float = knob(1.0, "probability in [0, 1] of a no_backtrack pair per backtrack pair")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.horizon not in ("full", "step"):
            raise ValueError(f"horizon must be 'full' or 'step', got {self.horizon!r}")
        if not 0.0 <= self.no_backtrack_share <= 1.0:
            raise ValueError(f"no_backtrack_share must be in [0, 1], got {self.no_backtrack_share}")


def _until_step_end(ids: list[int], ends: list[int], text: str, start: int, eos: int) -> list[int]:
    """``ids[start:]`` cut after the token that holds the next newline; EOS if the text ends first."""
    from_char = ends[start - 1] if start > 0 else 0
    newline = text.find("\n", from_char)
    if newline < 0:
        return [*ids[start:], eos]
    stop = next(i for i, e in enumerate(ends) if e >= newline + 1)
    return ids[start : max(stop + 1, start + 1)]


def dpo_pairs(problem: Problem, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **knobs) -> list[DPOPair]:
    """Backtrack and no-backtrack pairs of ``problem`` (see the module docstring).

    ``knobs`` are ``DPOConfig`` fields. Errors that cancel out (the carried-forward answer is
    still right) are redrawn a few times and otherwise skipped. Every pair is checked:
    ``apply_backspaces(prompt + chosen)`` is a prefix of the clean ids, and ``rejected`` holds
    no ⟨b⟩ (backtrack pairs) or backspaces to the same prefix (no_backtrack pairs).
    """
    cfg = config_from(DPOConfig, knobs)
    bt = require_backtrack_id(tokenizer)
    eos = tokenizer.eos_token_id
    if check_steps(problem.solution).first_error is not None:
        raise ValueError(f"problem {problem.id}: reference solution fails the step checker")
    prompt, solution = encode_problem(problem, tokenizer)
    clean, clean_ends = token_ends(tokenizer, problem.solution)
    sites = error_sites(problem.solution)
    rng = random.Random(f"dpo:{seed}:{problem.id}")
    pairs: list[DPOPair] = []
    for _ in range(cfg.examples_per_problem if sites else 0):
        for _attempt in range(4):
            c = one_error(problem, rng.choice(sites), cfg, rng)
            if c is None or answers_match(c.answer, problem.answer):
                continue
            tokens = error_tokens(clean, c, cfg.span, tokenizer)
            if tokens is None:
                continue
            j, err, wrong, wrong_ends = tokens
            k, j_end = len(err), j + len(err)
            if cfg.horizon == "full":
                chosen = [bt] * k + solution[j:]
                rejected = [*wrong[j_end:], eos]
            else:
                chosen = [bt] * k + _until_step_end(solution[:-1], clean_ends, problem.solution, j, eos)
                rejected = _until_step_end(wrong, wrong_ends, c.text, j_end, eos)
            pairs.append(_checked(DPOPair(tuple(prompt + clean[:j] + err), tuple(chosen), tuple(rejected),
                                          len(prompt), "backtrack", problem.id, c.kind), bt, prompt + solution))
            if rng.random() < cfg.no_backtrack_share and j + k < len(clean):
                pairs.append(_no_backtrack(prompt, solution, clean_ends, problem, j + k, k, c.kind, cfg, bt))
            break
    return pairs


def _no_backtrack(prompt: list[int], solution: list[int], clean_ends: list[int], problem: Problem,
                  cut: int, k: int, kind: str, cfg: DPOConfig, bt: int) -> DPOPair:
    eos = solution[-1]
    if cfg.horizon == "full":
        chosen, redo = solution[cut:], solution[cut - k :]
    else:
        chosen = _until_step_end(solution[:-1], clean_ends, problem.solution, cut, eos)
        redo = solution[cut - k : cut] + chosen
    pair = DPOPair(tuple(prompt + solution[:cut]), tuple(chosen), tuple([bt] * k + redo),
                   len(prompt), "no_backtrack", problem.id, kind)
    return _checked(pair, bt, prompt + solution)


def _checked(pair: DPOPair, bt: int, clean_ids: list[int]) -> DPOPair:
    full = list(pair.prompt_ids)
    chosen = apply_backspaces(full + list(pair.chosen_ids), bt, prompt_len=pair.prompt_len)
    ok = chosen == clean_ids[: len(chosen)]
    if pair.kind == "backtrack":
        ok = ok and bt not in pair.rejected_ids and apply_backspaces(full + list(pair.rejected_ids), bt,
                                                                        prompt_len=pair.prompt_len) != chosen
    else:
        rejected = apply_backspaces(full + list(pair.rejected_ids), bt, prompt_len=pair.prompt_len)
        ok = ok and rejected == chosen
    if not ok:
        raise AssertionError(f"problem {pair.problem_id}: a {pair.kind} pair breaks the backspace invariant")
    return pair
