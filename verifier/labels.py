"""Prefix labels for the verifier (DESIGN §4).

A ``LabelledSequence`` is a raw token sequence (prompt, then generated tokens, ⟨b⟩ included) with
one label per position t: the label of the prefix ending at token t, read from the hidden state
decoding computes when t is fed. 1 = the alive sequence up to t holds an uncorrected error (the
right next action is ⟨b⟩), 0 = it holds none, ``IGNORE`` = no label: ⟨b⟩ positions (inside a
run), prompt tokens before the prompt's last, and the last token (decoding never feeds it).
Labels in (0, 1) are soft Monte-Carlo labels.

Sources:

- ``injected``: examples from ``policy.data.inject_errors`` — ERROR tokens 1, CLEAN /
  CORRECTION / the prompt's last token 0, BACKTRACK ignored.
- ``rollouts``: the policy's own samples, labelled by the step checker on the alive text of
  every prefix (so the label turns 1 at the first wrong character and back to 0 when the
  policy's own ⟨b⟩-run deletes it). A sample whose steps all check but whose answer is wrong
  holds an error the checker cannot see: its positions after the prompt are ignored here and
  left to ``mc``.
- ``mc``: Math-Shepherd-style Monte-Carlo labels at step ends (newline tokens): k sampled
  completions from the alive prefix; soft label = the share that end with a wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from policy.data.grading import answers_match, check_steps, evaluate, extract_answer, format_number
from policy.data.problems import Problem, format_prompt
from policy.data.segments import Example, Segment
from policy.generate import generate, newline_token_ids, row_seed
from policy.layout import apply_backspaces
from policy.model import Policy

__all__ = [
    "IGNORE",
    "LABEL_SOURCES",
    "LabelledSequence",
    "holds_error",
    "labels_from_example",
    "labels_from_rollout",
    "mc_labels",
    "merge_mc",
    "rollout_labels",
]

IGNORE = -1.0
LABEL_SOURCES = ("injected", "rollouts", "mc")


@dataclass(frozen=True)
class LabelledSequence:
    """One raw sequence and its per-position prefix labels.

    ``ids [L]`` raw token ids (prompt first); ``labels [L]`` in {IGNORE} ∪ [0, 1];
    ``step_end [L]`` True where token t ends a step (a newline), i.e. where search scores a node.
    ``answer_wrong`` says whether the sequence's final answer is wrong (None when unknown).
    """

    ids: tuple[int, ...]
    prompt_len: int
    labels: tuple[float, ...]
    step_end: tuple[bool, ...]
    problem_id: str
    source: str
    answer_wrong: bool | None = None

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.labels) == len(self.step_end)):
            raise ValueError(f"sequence {self.problem_id}: ids, labels and step_end differ in length")
        if not 1 <= self.prompt_len <= len(self.ids):
            raise ValueError(f"sequence {self.problem_id}: prompt_len {self.prompt_len} out of range")

    @property
    def n_labelled(self) -> int:
        return sum(1 for v in self.labels if v != IGNORE)


def _base(ids: Sequence[int], prompt_len: int, backtrack_id: int, newlines: frozenset[int]) -> tuple[list[bool], list[bool]]:
    """Per position: may it carry a label (prompt's last token .. the second-to-last token, no ⟨b⟩),
    and does it end a step."""
    n = len(ids)
    usable = [prompt_len - 1 <= t < n - 1 and not (t >= prompt_len and ids[t] == backtrack_id) for t in range(n)]
    return usable, [ids[t] in newlines for t in range(n)]


def labels_from_example(example: Example, backtrack_id: int, newlines: frozenset[int]) -> LabelledSequence:
    """Labels of an injected-error example: ERROR → 1, CLEAN/CORRECTION/prompt end → 0, ⟨b⟩ ignored."""
    usable, step_end = _base(example.input_ids, example.prompt_len, backtrack_id, newlines)
    labels = []
    for t, seg in enumerate(example.segments):
        if not usable[t] or seg == Segment.BACKTRACK:
            labels.append(IGNORE)
        else:
            labels.append(1.0 if seg == Segment.ERROR else 0.0)
    return LabelledSequence(tuple(example.input_ids), example.prompt_len, tuple(labels), tuple(step_end),
                            example.problem_id, "injected", answer_wrong=example.error_kind is not None)


def holds_error(solution_text: str) -> bool:
    """True when a solution prefix holds a wrong calculator step.

    Closed annotations go through ``check_steps``; a still-open last annotation
    ``<<expr=partial`` is wrong as soon as the written part stops being a prefix of the value,
    so a prefix is labelled wrong from its first wrong character on.
    """
    open_at = solution_text.rfind("<<")
    tail = None
    if open_at >= 0 and ">>" not in solution_text[open_at:] and "\n" not in solution_text[open_at:]:
        solution_text, tail = solution_text[:open_at], solution_text[open_at + 2:]
    if check_steps(solution_text).errors:
        return True
    if tail is None or "=" not in tail:
        return False
    expr, written = tail.split("=", 1)
    written = written.split(">", 1)[0].strip().replace(",", "")  # "12>" is "12" with ">>" half written
    if not written:
        return False
    if "=" in written:
        return True
    try:
        expected = format_number(evaluate(expr))
    except (ValueError, ZeroDivisionError, OverflowError):
        return True  # a complete expression that does not evaluate is a malformed step
    return not expected.startswith(written)


def labels_from_rollout(problem: Problem, ids: Sequence[int], prompt_len: int, tokenizer,
                        backtrack_id: int) -> LabelledSequence:
    """Checker labels of one sampled sequence ``ids`` (prompt + raw generated tokens).

    Walks the raw tokens through the backspace semantics, keeping the alive sequence, and labels
    each fed position by ``holds_error`` on the alive solution text at that moment.
    """
    ids = [int(t) for t in ids]
    newlines = newline_token_ids(tokenizer)
    usable, step_end = _base(ids, prompt_len, backtrack_id, newlines)
    alive = apply_backspaces(ids, backtrack_id, prompt_len=prompt_len)[prompt_len:]
    final = tokenizer.decode(alive, skip_special_tokens=True)
    answer_wrong = not answers_match(extract_answer(final), problem.answer)
    labels = []
    for t in range(len(ids)):
        if not usable[t]:
            labels.append(IGNORE)
            continue
        # The alive sequence when t is fed: the run before t (if any) has just been applied.
        prefix = apply_backspaces(ids[: t + 1], backtrack_id, prompt_len=prompt_len)[prompt_len:]
        labels.append(1.0 if holds_error(tokenizer.decode(prefix, skip_special_tokens=True)) else 0.0)
    if answer_wrong and not any(v == 1.0 for v in labels):
        # The checker sees no wrong step, yet the answer is wrong: an error it cannot locate.
        labels = [v if t == prompt_len - 1 else IGNORE for t, v in enumerate(labels)]
    return LabelledSequence(tuple(ids), prompt_len, tuple(labels), tuple(step_end), problem.id, "rollouts",
                            answer_wrong=answer_wrong)


def rollout_labels(policy: Policy, problems: Sequence[Problem], *, samples_per_problem: int = 2,
                   temperature: float = 1.0, max_new_tokens: int = 200, seed: int = 0,
                   batch_size: int = 32, progress: bool = True) -> list[LabelledSequence]:
    """Sample the policy (with rewind) on every problem and label each sample by the checker."""
    if samples_per_problem < 1:
        raise ValueError(f"samples_per_problem must be >= 1, got {samples_per_problem}")
    if policy.backtrack_id is None:
        raise ValueError("rollout labels need a policy with the backtrack token")
    jobs = [p for p in problems for _ in range(samples_per_problem)]
    if not jobs:
        return []
    gens = generate(policy, [format_prompt(p.question) for p in jobs], do_sample=True, temperature=temperature,
                    max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress)
    out = []
    for p, g in tqdm(list(zip(jobs, gens)), desc="label rollouts", disable=not progress):
        out.append(labels_from_rollout(p, list(g.prompt_ids) + list(g.raw_ids), len(g.prompt_ids),
                                       policy.tokenizer, policy.backtrack_id))
    return out


def mc_labels(policy: Policy, sequences: Sequence[LabelledSequence], problems: dict[str, Problem], *, k: int = 4,
              temperature: float = 1.0, max_new_tokens: int = 160, seed: int = 0, batch_size: int = 64,
              progress: bool = True) -> list[LabelledSequence]:
    """Monte-Carlo step labels: for every step end t of each sequence (labelled or ignored by the
    checker, ⟨b⟩ excluded), ``k`` completions of the alive prefix; label = share whose final
    answer is wrong. Every other position is ``IGNORE``. Completions of one prefix are seeded
    by ``row_seed(seed, sequence, t, j)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bt = policy.backtrack_id
    tok = policy.tokenizer
    newlines = newline_token_ids(tok)
    jobs: list[tuple[int, int, list[int]]] = []  # (sequence, position, alive prefix ids)
    for s, seq in enumerate(sequences):
        usable, _ = _base(seq.ids, seq.prompt_len, bt, newlines)
        for t in range(len(seq.ids)):
            if usable[t] and seq.step_end[t]:
                jobs.append((s, t, apply_backspaces(list(seq.ids[: t + 1]), bt, prompt_len=seq.prompt_len)))
    wrong: dict[tuple[int, int], int] = {}
    if jobs:
        prompts = [ids for _, _, ids in jobs for _ in range(k)]
        seeds = [row_seed(seed, s, t, j) for s, t, _ in jobs for j in range(k)]
        gens = generate(policy, prompts, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                        seeds=seeds, batch_size=batch_size, progress=progress)
        for n, (s, t, ids) in enumerate(jobs):
            seq = sequences[s]
            head = tok.decode(ids[seq.prompt_len:], skip_special_tokens=True)
            for g in gens[n * k:(n + 1) * k]:
                ok = answers_match(extract_answer(head + g.text), problems[seq.problem_id].answer)
                wrong[(s, t)] = wrong.get((s, t), 0) + (not ok)
    out = []
    for s, seq in enumerate(sequences):
        labels = tuple(wrong[(s, t)] / k if (s, t) in wrong else IGNORE for t in range(len(seq.ids)))
        out.append(replace(seq, labels=labels, source="mc"))
    return out


def merge_mc(checked: LabelledSequence, mc: LabelledSequence) -> LabelledSequence:
    """The ``mix`` labels of one rollout: the checker's label where it sees an error (certain), the
    MC label at step ends where the checker sees none or could not locate the error."""
    if checked.ids != mc.ids:
        raise ValueError("merge_mc needs the checker and MC labels of the same sequence")
    labels = tuple(m if m != IGNORE and c != 1.0 else c for c, m in zip(checked.labels, mc.labels))
    return replace(checked, labels=labels, source="rollouts")
