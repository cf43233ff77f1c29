"""On-policy step labels for the step verifier: the policy's own sibling steps, drawn by search.

``collect_steps`` runs step beam search (no pruning, children ranked by path log-prob) on
problems the policy did not train on, at the search temperature, through a ``RecordingEngine``
that keeps every drawn child's ``StepView`` — the very tensors search hands the verifier, so
training and search read identical features. Each child is labelled by ``step_label``:

- 1 when the step's calculator annotation is wrong or malformed (``check_steps`` on the line), or
  the number written right after it differs from its result (``<<3*3=9>>8``),
- 1 when an operand of the annotation appears nowhere before the step (not in the question, not
  an earlier result, not a common constant) — a misread quantity,
- 1 when a final ``#### x`` line disagrees with the last result computed on the path,
- 1 when the step hit the step-length cap (a runaway line),
- else 0.

Children of one expansion form a *sibling group*: the verifier's job in search is to order them.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch
from tqdm.auto import tqdm

from policy.atomic import public_mode
from policy.data.corrupt import slip_number
from policy.data.grading import (
    answers_match,
    check_steps,
    evaluate,
    extract_answer,
    format_number,
    parse_annotations,
)
from policy.data.problems import Problem
from policy.layout import layout_to_4d_mask
from policy.model import Policy
from search import solve_many
from search.interfaces import ExpandResult, StepRequest, StepView

__all__ = ["RecordingEngine", "StepData", "add_counterfactuals", "collect_steps", "reference_steps", "step_label"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_RESTATED = re.compile(r"<<[^<>=]*=([^<>]*)>>(\d[\d,]*(?:\.\d+)?(?:/\d+)?)")
# constants a correct solution may introduce without having read them (unit conversions, halves, percent)
_FREE_CONSTANTS = frozenset({"1", "2", "3", "4", "5", "7", "10", "12", "24", "60", "100", "1000"})


def _numbers(text: str) -> set[str]:
    return {m.group(0).lstrip("0") or "0" for m in _NUMBER.finditer(text.replace(",", ""))}


def step_label(question: str, prefix: str, step: str, stop_reason: str) -> tuple[int, str]:
    """(1 if the step holds an error else 0, the kind: ``ok``, ``result``, ``malformed``, ``operand``,
    ``answer``, ``runaway``). ``prefix`` is the alive solution text before the step."""
    if stop_reason == "max_step_tokens":
        return 1, "runaway"
    check = check_steps(step)
    if check.errors:
        return 1, ("malformed" if check.errors[0].kind == "malformed" else "result")
    for m in _RESTATED.finditer(step):  # GSM8K form restates the result after the annotation
        if _numbers(m.group(1)) != _numbers(m.group(2)):
            return 1, "result"
    known = _numbers(question) | _numbers(prefix) | _FREE_CONSTANTS
    for a in parse_annotations(step):
        if any(x not in known for x in _numbers(a.expr)):
            return 1, "operand"
        known |= _numbers(a.result)
    if step.lstrip().startswith("####"):
        results = [a.result for a in parse_annotations(prefix)]
        got = extract_answer(prefix + step)
        if results and got is not None and not answers_match(got, results[-1]):
            return 1, "answer"
        if got is None:
            return 1, "malformed"
    return 0, "ok"


@dataclass
class StepData:
    """Labelled sibling steps: per row a ``StepView`` and its label, its sibling group and problem."""

    views: list[StepView] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # rows with one group id are siblings
    problem_ids: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # the step's own log-prob (raw tokens)
    path_logprobs: list[float] = field(default_factory=list)  # log-prob of the path up to and with the step
    p_policy: list[float] = field(default_factory=list)  # the policy's P(⟨b⟩) after the step
    texts: list[str] = field(default_factory=list)
    prefix_ids: list[tuple[int, ...]] = field(default_factory=list)  # prompt + alive path before the step

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: Sequence[int]) -> StepData:
        out = StepData()
        for name in self.__dataclass_fields__:
            src = getattr(self, name)
            setattr(out, name, [src[i] for i in rows])
        return out

    def concat(self, other: StepData) -> StepData:
        """The rows of ``self`` then of ``other`` (group ids must not collide; reference groups are negative)."""
        out = StepData()
        for name in self.__dataclass_fields__:
            setattr(out, name, list(getattr(self, name)) + list(getattr(other, name)))
        return out

    def of_problems(self, ids: set[str]) -> StepData:
        return self.subset([i for i, p in enumerate(self.problem_ids) if p in ids])

    def as_saved(self) -> StepData:
        """The rows as ``load`` gives them back after ``save`` (hidden states rounded through fp16), so a
        stage that collected them and one that resumed from the file train the same verifier."""
        return replace(self, **{name: list(getattr(self, name)) for name in self.__dataclass_fields__ if name != "views"},
                       views=[replace(v, hidden=v.hidden.half().float()) for v in self.views])

    def save(self, path: str | Path, *, key: str) -> None:
        """Write the rows to ``path`` (atomically) under ``key``. Every per-row sequence is stored
        flat — one tensor and the row lengths — so loading 40,000 reference steps takes about a
        second, not the ~13 s of a list of per-row tensors; hidden states are stored in fp16."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
        os.close(fd)
        public_mode(tmp)
        try:
            torch.save({"key": key, "layout": "flat", **self._flat()}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _flat(self) -> dict:
        vs = self.views
        H = vs[0].hidden.shape[-1] if vs else 0

        def seq(parts, dtype):  # (flat tensor, lengths)
            parts = [torch.as_tensor(p, dtype=dtype) for p in parts]
            return (torch.cat(parts) if parts else torch.zeros(0, dtype=dtype),
                    torch.tensor([len(p) for p in parts], dtype=torch.long))

        return {
            "hidden": (torch.cat([v.hidden.half().reshape(-1, H) for v in vs]) if vs else torch.zeros(0, 0).half(),
                       torch.tensor([v.hidden.shape[0] for v in vs], dtype=torch.long)),
            "step_logprobs": seq([v.logprobs for v in vs], torch.float32),
            "entropies": seq([v.entropies for v in vs], torch.float32),
            "depth": torch.tensor([v.depth for v in vs], dtype=torch.long),
            "ids": seq([list(v.ids) for v in vs], torch.long),
            "prefix_ids": seq([list(p) for p in self.prefix_ids], torch.long),
            "labels": torch.tensor(self.labels, dtype=torch.long), "groups": torch.tensor(self.groups, dtype=torch.long),
            # float64 holds a Python float exactly
            **{k: torch.tensor(getattr(self, k), dtype=torch.float64) for k in ("logprobs", "path_logprobs", "p_policy")},
            **{k: list(getattr(self, k)) for k in ("kinds", "problem_ids", "texts")},
        }

    @classmethod
    def load(cls, path: str | Path, *, key: str) -> StepData | None:
        """The rows ``save`` wrote under ``key`` (hidden states back in fp32), or None when the file is
        missing, torn, foreign or of another key."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            data = torch.load(path, weights_only=True)
        except Exception:  # a torn or foreign file: collect again
            return None
        if data.get("key") != key:
            return None
        try:
            return cls._unflat(data) if data.get("layout") == "flat" else cls._from_rows(data)
        except (KeyError, ValueError, TypeError, RuntimeError):  # another layout of the file: collect again
            return None

    @classmethod
    def _unflat(cls, d: dict) -> StepData:
        def split(pair):
            flat, lengths = pair
            return torch.split(flat, lengths.tolist()) if len(lengths) else ()

        hidden = split((d["hidden"][0].float(), d["hidden"][1]))
        views = [StepView(h, lp, ent, int(dep), ids=tuple(i.tolist()))
                 for h, lp, ent, dep, i in zip(hidden, split(d["step_logprobs"]), split(d["entropies"]),
                                               d["depth"].tolist(), split(d["ids"]), strict=True)]
        return cls(views=views, labels=d["labels"].tolist(), groups=d["groups"].tolist(),
                   prefix_ids=[tuple(p.tolist()) for p in split(d["prefix_ids"])],
                   **{k: d[k].tolist() for k in ("logprobs", "path_logprobs", "p_policy")},
                   **{k: list(d[k]) for k in ("kinds", "problem_ids", "texts")})

    @classmethod
    def _from_rows(cls, data: dict) -> StepData:  # the layout before 2026-11-30: a list of per-row tensors
        out = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k != "views"})
        out.views = [StepView(h.float(), lp, ent, int(d), ids=tuple(i)) for h, lp, ent, d, i in data["views"]]
        return out


class RecordingEngine:
    """A ``PolicyEngine`` that forwards to a policy's engine and records every drawn child's view."""

    def __init__(self, policy: Policy, questions: dict[str, str]):
        self.policy = policy
        self.inner = policy.engine(share_kv=True)
        self.hidden_size = self.inner.hidden_size
        self.questions = questions  # question text -> problem id
        self.problem_of_prompt: dict[int, str] = {}  # id of a root KV handle -> its question
        self.data = StepData()
        self._path_lp: dict[int, float] = {}
        self._group = 0

    def start(self, questions):
        prompts = self.inner.start(questions)
        for q, p in zip(questions, prompts):
            self.problem_of_prompt[id(p.state)] = q
        return prompts

    def release(self, state) -> None:
        self.inner.release(state)

    def solution_text(self, prompt_state, ids) -> str:
        return self.inner.solution_text(prompt_state, ids)

    def _root(self, state):
        while state.parent is not None:
            state = state.parent
        return state

    def expand(self, requests: Sequence[StepRequest], **kw) -> list[ExpandResult]:
        results = self.inner.expand(requests, **kw)
        tok = self.policy.tokenizer
        for req, res in zip(requests, results):
            question = self.problem_of_prompt[id(self._root(req.state))]
            prefix_ids = req.state.path_tokens()[req.state.prompt_len:]
            prefix = tok.decode(prefix_ids, skip_special_tokens=True)
            base_lp = self._path_lp.get(id(req.state), 0.0)
            for s in res.samples:
                if s.rejected:
                    continue
                label, kind = step_label(question, prefix, s.text, s.stop_reason)
                d = self.data
                d.views.append(StepView.of(s, req.depth + 1))
                d.labels.append(label)
                d.kinds.append(kind)
                d.groups.append(self._group)
                d.problem_ids.append(self.questions[question])
                d.logprobs.append(float(s.logprob))
                d.path_logprobs.append(base_lp + float(s.logprob))
                d.p_policy.append(float(s.p_backtrack_policy))
                d.texts.append(s.text)
                d.prefix_ids.append(tuple(req.state.path_tokens()))
                if s.state is not None:
                    self._path_lp[id(s.state)] = base_lp + float(s.logprob)
            self._group += 1
        return results


def collect_steps(policy: Policy, problems: Sequence[Problem], *, width: int = 4, samples: int = 4,
                  temperature: float = 0.4, seed: int = 0, batch_problems: int = 32, max_depth: int = 12,
                  max_step_tokens: int = 96, rewrite: int = 0, rewrite_trigger=None,
                  progress: bool = True) -> StepData:
    """Label every child drawn by an unpruned, log-prob-ranked step beam (W×M children at the
    root, M per beam after) on ``problems``; see the module docstring for the labels. With
    ``rewrite`` > 0 a beam whose children ``rewrite_trigger`` (a step verifier: the step checker,
    ``verifier.baselines.CheckerOracle``) all scores P(error) >= 0.5 also draws ``rewrite``
    rewrites (``BeamConfig.rewrite``), labelled like every other child; the trigger ranks nothing."""
    if rewrite and rewrite_trigger is None:
        raise ValueError("rewrite labels need a rewrite_trigger (the step checker) to say where to draw them")

    if not problems:
        raise ValueError("no problems to collect verifier labels from")
    questions = {p.question: p.id for p in problems}
    engine = RecordingEngine(policy, questions)
    bar = tqdm(total=len(problems), desc="verifier labels (own samples)", disable=not progress)
    for start in range(0, len(problems), batch_problems):
        chunk = list(problems[start:start + batch_problems])
        extra = {"verifier": rewrite_trigger, "rewrite": rewrite} if rewrite else {"verifier": None}
        solve_many([p.question for p in chunk], policy=engine, strategy="beam", width=width,
                   samples=samples, rank="logprob", threshold=1.0, temperature=temperature,
                   seed=seed + start, max_depth=max_depth, max_step_tokens=max_step_tokens, **extra)
        bar.update(len(chunk))
    bar.close()
    return engine.data


def _counterfactual_text(text: str, label: int, kind: str, rng: random.Random) -> str | None:
    """The step with its one annotation's result changed: to the right value when it is wrong
    (``result``), to a plausible wrong value when it is right; None when there is nothing to change."""
    anns = parse_annotations(text)
    if len(anns) != 1 or kind not in ("ok", "result"):
        return None
    a = anns[0]
    try:
        value = evaluate(a.expr)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    if value.denominator != 1 or value < 0:
        return None
    right = int(value)
    if label == 1:
        new = right
    else:
        options = [right + d for d in (-10, -2, -1, 1, 2, 10) if right + d >= 0]
        digits = str(right)
        if len(digits) == 2 and digits[0] != digits[1]:
            options.append(int(digits[::-1]))
        new = rng.choice(options)
    old = a.result.strip()
    if not old or str(new) == old:
        return None
    head, tail = text[: a.result_span[0]], text[a.result_span[1]:]
    if tail.startswith(">>" + old):  # GSM8K form repeats the result after the annotation
        tail = ">>" + str(new) + tail[2 + len(old):]
    return head + str(new) + tail


@torch.no_grad()
def _forced_views(policy: Policy, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int,
                  progress: bool, desc: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(hidden [T, H], logprobs [T], entropies [T])`` of each ``(prefix ids, step ids)``: one causal
    forward of the frozen policy over prefix + step — the view decoding would have computed had the
    policy written that step (tested equal to the engine's). Training only; search never runs this."""
    tok, model = policy.tokenizer, policy.model
    pad = int(tok.pad_token_id)
    out = []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress):
        chunk = items[start:start + batch_size]
        seqs = [list(prefix) + list(ids) for prefix, ids in chunk]
        L = max(map(len, seqs))
        input_ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        mask = torch.zeros(len(seqs), L, dtype=torch.long)
        for b, sq in enumerate(seqs):  # right padding: a causal forward never lets real tokens see it
            input_ids[b, : len(sq)] = torch.tensor(sq)
            mask[b, : len(sq)] = 1
        res = model(input_ids=input_ids.to(policy.device), attention_mask=mask.to(policy.device),
                    output_hidden_states=True)
        hidden, logits = res.hidden_states[-1].float().cpu(), res.logits.float().cpu()
        for b, (_, ids) in enumerate(chunk):
            n, T = len(seqs[b]), len(ids)
            logp = logits[b, n - T - 1 : n - 1].log_softmax(-1)  # (T, V): the distributions the step drew from
            lp = logp.gather(-1, torch.tensor(list(ids)).view(-1, 1)).squeeze(-1)
            out.append((hidden[b, n - T : n].clone(), lp, -(logp.exp() * logp).sum(-1)))
    return out


@torch.no_grad()
def add_counterfactuals(policy: Policy, data: StepData, *, seed: int = 0, batch_size: int = 32,
                        progress: bool = True) -> StepData:
    """``data`` plus, for every one-annotation step, its twin with the result changed (right ↔ wrong),
    as a sibling in the same group; the twin's view from ``_forced_views``."""
    rng = random.Random(f"counterfactuals:{seed}")
    tok = policy.tokenizer
    twins = []
    for i, (text, y, kind) in enumerate(zip(data.texts, data.labels, data.kinds)):
        new = _counterfactual_text(text, y, kind, rng) if i < len(data.prefix_ids) else None
        if new is not None:
            twins.append((i, new, tok.encode(new, add_special_tokens=False, split_special_tokens=True)))
    views = _forced_views(policy, [(data.prefix_ids[i], ids) for i, _, ids in twins], batch_size=batch_size,
                          progress=progress, desc="counterfactual twins")
    out = data.subset(range(len(data)))
    for (i, text, ids), (h, lp, ent) in zip(twins, views):
        out.views.append(StepView(h, lp, ent, data.views[i].depth, text, ids=tuple(ids)))
        out.labels.append(1 - data.labels[i])
        out.kinds.append("twin-" + ("right" if data.labels[i] else "wrong"))
        out.groups.append(data.groups[i])
        out.problem_ids.append(data.problem_ids[i])
        out.logprobs.append(float(lp.sum()))
        out.path_logprobs.append(data.path_logprobs[i] - data.logprobs[i] + float(lp.sum()))
        out.p_policy.append(data.p_policy[i])
        out.texts.append(text)
        out.prefix_ids.append(data.prefix_ids[i])
    return out


def _slipped_steps(line: str, rng: random.Random, n: int) -> list[str]:
    """Up to ``n`` distinct wrong versions of a correct one-annotation line: its result slipped
    (one digit ±1, a carry, a swap, ±1, ±10) — in both places it is written, or only inside or only
    after the annotation, as the policy's own slips are."""
    anns = parse_annotations(line)
    if len(anns) != 1 or not anns[0].result.strip():
        return []
    a = anns[0]
    old = a.result.strip()
    repeated = line[a.result_span[1]:].startswith(">>" + old)
    out: list[str] = []
    for _ in range(4 * n):
        if len(out) >= n:
            break
        new = slip_number(old.replace(",", ""), rng) if rng.random() < 0.7 else None
        if new is None:
            try:
                new = format_number(Fraction(old.replace(",", "")) + rng.choice((-10, -1, 1, 10)))
            except (ValueError, ZeroDivisionError):
                return out
        if new.startswith("-") and not old.startswith("-"):
            continue
        where = rng.choice(("both", "both", "inside", "after")) if repeated else "inside"
        text = with_result(line, a, new, where)
        if text != line and text not in out:
            out.append(text)
    return out


def with_result(line: str, a, new: str, where: str) -> str:
    """``line`` with its one annotation ``a``'s result written as ``new``: ``both`` inside the
    annotation and where the line repeats it after ``>>``, or only ``inside``, or only ``after`` (a
    line that does not repeat the result has only the inside)."""
    old = a.result.strip()
    head, tail = line[: a.result_span[0]], line[a.result_span[1]:]
    repeated = tail.startswith(">>" + old)
    if not repeated:
        where = "inside"
    inside = new if where in ("both", "inside") else old
    after = (">>" + (new if where in ("both", "after") else old) + tail[2 + len(old):]) if repeated else tail
    return head + inside + after


@torch.no_grad()
def _tree_views(policy: Policy, trees: Sequence[tuple[Sequence[int], Sequence[tuple[int, Sequence[int], bool]]]], *,
                batch_size: int, progress: bool, desc: str) -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """``_forced_views`` for steps that share prefixes, in one forward per tree instead of one per step.

    A tree is ``(trunk ids, [(at, step ids, on_trunk)])``: each step follows ``trunk[:at]``. A step
    ``on_trunk`` is ``trunk[at:at + len(ids)]`` itself; any other is a branch: its tokens are
    appended after the trunk, at positions ``at, at + 1, ...``, reading ``trunk[:at]`` and the
    branch before them (a bool tree mask) — the positions and keys a forward over
    ``trunk[:at] + ids`` gives it, so the views are the same (tested against ``_forced_views``).
    Returns, per tree, each step's ``(hidden [T, H], logprobs [T], entropies [T])``."""
    tok, model = policy.tokenizer, policy.model
    pad = int(tok.pad_token_id)
    plans = []  # per tree: (ids, positions, parents-as-ranges, where each step's rows are)
    for trunk, steps in trees:
        trunk = list(trunk)
        ids, pos = list(trunk), list(range(len(trunk)))
        reads = [(0, i + 1, None) for i in range(len(trunk))]  # row i reads trunk[:i + 1] (+ branch [b0, i])
        where = []
        for at, step, on_trunk in steps:
            step = list(step)
            if not 0 < at <= len(trunk) or not step:
                raise ValueError(f"a step must follow a non-empty trunk prefix and hold tokens (at={at})")
            if on_trunk:
                if trunk[at:at + len(step)] != step:
                    raise ValueError("a step marked on_trunk is not the trunk's tokens at its place")
                where.append((at - 1, list(range(at, at + len(step)))))  # row that predicts its first token
                continue
            b0 = len(ids)
            ids += step
            pos += range(at, at + len(step))
            reads += [(0, at, (b0, b0 + j + 1)) for j in range(len(step))]
            where.append((at - 1, list(range(b0, b0 + len(step)))))
        plans.append((ids, pos, reads, where))
    order = sorted(range(len(plans)), key=lambda i: len(plans[i][0]))  # similar lengths share a batch
    results: dict[int, list] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        chunk = [plans[i] for i in order[start:start + batch_size]]
        L = max(len(c[0]) for c in chunk)
        input_ids = torch.full((len(chunk), L), pad, dtype=torch.long)
        positions = torch.zeros(len(chunk), L, dtype=torch.long)
        # row r reads keys [lo, hi) and [blo, bhi); padding rows read themselves (never read by real rows)
        spans = torch.tensor([[r, r + 1, 0, 0] for r in range(L)]).repeat(len(chunk), 1, 1)  # (B, L, 4)
        for b, (ids, pos, reads, _) in enumerate(chunk):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            positions[b, : len(ids)] = torch.tensor(pos)
            spans[b, : len(reads)] = torch.tensor([(lo, hi, *(branch or (0, 0))) for lo, hi, branch in reads])
        k = torch.arange(L)
        lo, hi, blo, bhi = (spans[..., i, None] for i in range(4))  # each (B, L, 1)
        allowed = ((k >= lo) & (k < hi)) | ((k >= blo) & (k < bhi))  # (B, L, L)
        sdpa = getattr(model.config, "_attn_implementation", "eager") == "sdpa"
        mask = allowed.unsqueeze(1) if sdpa else layout_to_4d_mask(allowed, next(model.parameters()).dtype)
        res = model(input_ids=input_ids.to(policy.device), attention_mask=mask.to(policy.device),
                    position_ids=positions.to(policy.device), output_hidden_states=True)
        hidden, logits = res.hidden_states[-1].float().cpu(), res.logits.float().cpu()
        for b, (ids, _, _, where) in enumerate(chunk):
            views = []
            for first, rows in where:
                src = torch.tensor([first] + rows[:-1])  # the rows whose distributions drew the step's tokens
                logp = logits[b, src].log_softmax(-1)  # (T, V)
                lp = logp.gather(-1, torch.tensor([ids[r] for r in rows]).view(-1, 1)).squeeze(-1)
                views.append((hidden[b, rows].clone(), lp, -(logp.exp() * logp).sum(-1)))
            results[order[start + b]] = views
    return [results[i] for i in range(len(plans))]


@torch.no_grad()
def reference_steps(policy: Policy, problems: Sequence[Problem], *, slips: int = 2, seed: int = 0,
                    batch_size: int = 8, progress: bool = True) -> StepData:
    """Sibling groups built from reference solutions: every correct one-annotation line, after the
    reference lines before it, beside ``slips`` versions with a slipped result (label 1).

    Arithmetic is what the policy gets wrong, and checking it needs many more examples than the
    policy's own samples give; reference solutions give them cheaply: one forward of the frozen
    policy per problem (``_tree_views``: the reference solution with every slipped line as a branch
    off its prefix), so the verifier reads what it reads in search."""
    rng = random.Random(f"reference-steps:{seed}")
    tok = policy.tokenizer
    enc = lambda t: tok.encode(t, add_special_tokens=False, split_special_tokens=True)  # noqa: E731
    rows: list[tuple] = []  # (problem id, label, text, prefix ids, step ids, group, depth)
    trees = []
    for p in problems:
        prefix = list(policy.prompt_ids(p.question))
        steps = []
        for depth, line in enumerate((ln + "\n" for ln in p.solution.split("\n")), start=1):
            ids = enc(line)
            if check_steps(line).errors:  # a reference line the checker rejects teaches nothing
                prefix += ids
                continue
            wrong = _slipped_steps(line, rng, slips)
            if wrong:
                group = -(1 + len(rows))  # negative: never an own-step group id
                for label, text in [(0, line)] + [(1, w) for w in wrong]:
                    step = ids if label == 0 else enc(text)
                    rows.append((p.id, label, text, list(prefix), step, group, depth))
                    steps.append((len(prefix), step, label == 0))
            prefix += ids
        if steps:
            trees.append((prefix, steps))
    views = [v for tree in _tree_views(policy, trees, batch_size=batch_size, progress=progress,
                                       desc="verifier labels (reference steps)") for v in tree]
    out = StepData()
    for (pid, label, text, prefix, ids, group, depth), (h, lp, ent) in zip(rows, views):
        out.views.append(StepView(h, lp, ent, depth, text, ids=tuple(ids)))
        out.labels.append(label)
        out.kinds.append("reference-" + ("slip" if label else "ok"))
        out.groups.append(group)
        out.problem_ids.append("reference:" + pid)
        out.logprobs.append(float(lp.sum()))
        out.path_logprobs.append(float(lp.sum()))
        out.p_policy.append(0.0)
        out.texts.append(text)
        out.prefix_ids.append(tuple(prefix))
    return out
