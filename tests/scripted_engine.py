"""A scripted ``PolicyEngine`` for search tests: steps come from a table, no model.

``table`` maps the alive solution text so far (prompt excluded), or a ``(question, prefix)``
pair (looked up first), to the candidate next steps.
A candidate is ``Step(text, weight, p)``: ``weight`` is its probability mass (the step's
log-prob is ``log(weight / total)``), ``p`` the P(backtrack) that ``HiddenVerifier`` reads from
the child's hidden state (``hidden[0]``); ``p_policy`` the policy's own P(⟨b⟩) (default ``p``).
At temperature 0 the heaviest candidate is drawn (the first on ties); otherwise
``random.Random(seed)`` draws by weight, so a child depends only on its prefix and seed.

Tokens are characters (id = ``ord``); ``BT`` stands for ⟨b⟩ inside step texts. A step whose
alive text starts with ``"#### "`` finishes the solution with that answer. A prefix missing
from the table uses ``table["*"]`` if present, else raises ``KeyError``.

The engine keeps what a test needs to check: every ``expand`` call, every live handle and
double releases (an error).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from search.interfaces import ExpandResult, Prompt, StepRequest, StepSample

__all__ = ["ARITH", "BT", "HiddenVerifier", "ScriptedEngine", "Step", "summary"]

BT = "\x08"  # ⟨b⟩ in scripted steps
BYTES_PER_TOKEN = 16


@dataclass(frozen=True)
class Step:
    text: str
    weight: float = 1.0
    p: float = 0.0
    p_policy: float | None = None


@dataclass(frozen=True, eq=False)
class _State:
    question: str
    prefix: str  # alive solution text so far


@dataclass
class ScriptedEngine:
    table: dict[str, list[Step | str]]
    hidden_size: int = 4
    share_kv: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)
    live: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)  # ("expand", prefixes) / ("release", prefix)
    engine_options: dict[str, Any] = field(default_factory=dict)  # what solve() passed to engine()

    def engine(self, share_kv: bool = True, **options: Any) -> ScriptedEngine:
        """What ``search.solve`` calls with ``SearchConfig.engine_options()``; the options are kept
        (``engine_options``) so a test can see them arrive."""
        self.share_kv = share_kv
        self.engine_options = dict(options)
        return self

    def _new(self, question: str, prefix: str) -> _State:
        state = _State(question, prefix)
        self.live.add(id(state))
        self._keep = getattr(self, "_keep", [])
        self._keep.append(state)  # ids stay unique while the engine lives
        return state

    def start(self, questions: Sequence[str]) -> list[Prompt]:
        self.started.extend(questions)
        return [Prompt(state=self._new(q, ""), ids=tuple(map(ord, q)), text=q, tokens_run=len(q),
                       kv_bytes=len(q) * BYTES_PER_TOKEN) for q in questions]

    def expand(self, requests: Sequence[StepRequest], *, temperature: float, top_p: float,
               max_step_tokens: int) -> list[ExpandResult]:
        self.calls.append({"prefixes": [r.state.prefix for r in requests], "seeds": [r.seeds for r in requests],
                           "questions": [r.state.question for r in requests], "temperature": temperature})
        self.events.append(("expand", [r.state.prefix for r in requests]))
        out = []
        for r in requests:
            if id(r.state) not in self.live:
                raise RuntimeError(f"expand of a released handle (prefix {r.state.prefix!r})")
            samples = tuple(self._sample(r.state, seed, temperature) for seed in r.seeds)
            ran = sum(len(s.raw_ids) for s in samples)
            # as policy.engine.RewindEngine counts: the path is encoded (or saved) once per request,
            # whatever the number of children drawn from it
            path = len(r.state.question) + len(r.state.prefix)
            out.append(ExpandResult(samples=samples, tokens_run=ran + (0 if self.share_kv else path),
                                    tokens_saved=path if self.share_kv else 0))
        return out

    def _candidates(self, question: str, prefix: str) -> list[Step]:
        if (question, prefix) in self.table:
            cands = self.table[(question, prefix)]
        elif prefix in self.table:
            cands = self.table[prefix]
        elif "*" in self.table:
            cands = self.table["*"]
        else:
            raise KeyError(f"scripted engine has no steps after {prefix!r}")
        return [c if isinstance(c, Step) else Step(c) for c in cands]

    def _sample(self, state: _State, seed: int, temperature: float) -> StepSample:
        cands = self._candidates(state.question, state.prefix)
        total = sum(c.weight for c in cands)
        if temperature == 0:
            step = max(cands, key=lambda c: c.weight)  # max() keeps the first of equal weights
        else:
            step = random.Random(seed).choices(cands, weights=[c.weight for c in cands])[0]
        alive, runs, rejected, run_start = [], [], False, None
        for i, ch in enumerate(step.text):
            if ch == BT:
                run_start = i if run_start is None else run_start
                if not alive:
                    rejected = True
                    break
                alive.pop()
            else:
                if run_start is not None:
                    runs.append((run_start, i - run_start))
                    run_start = None
                alive.append(ch)
        text = "".join(alive)
        finished = not rejected and text.startswith("#### ")
        hidden = torch.zeros(self.hidden_size)
        hidden[0] = step.p
        child = None if rejected else self._new(state.question, state.prefix + text)
        return StepSample(
            ids=tuple(map(ord, text)), raw_ids=tuple(map(ord, step.text)), text=text, raw_text=step.text,
            logprob=math.log(step.weight / total), backtracks=tuple(runs), hidden=hidden,
            p_backtrack_policy=step.p if step.p_policy is None else step.p_policy, state=child,
            rejected=rejected, finished=finished, answer=text[5:].strip() if finished else None,
            kv_bytes=0 if rejected else len(text) * BYTES_PER_TOKEN,
            stop_reason="rejected" if rejected else ("answer" if finished else "newline"),
        )

    def release(self, state: Any) -> None:
        if id(state) in self.released:
            raise RuntimeError(f"double release of the handle after {state.prefix!r}")
        self.live.discard(id(state))
        self.events.append(("release", state.prefix))
        self.released.add(id(state))

    def solution_text(self, prompt_state: Any, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))


# a small arithmetic-like table: in-step backspaces, a rejected step, scores from 0.05 to 0.8
ARITH: dict = {
    "": [Step("x=2\n", 3, 0.1), Step("x=3\n", 1, 0.8), Step("x=9" + BT * 3 + "x=2\n", 1, 0.2),
         Step(BT + "oops\n", 0.5, 0.0)],
    "x=2\n": [Step("y=4\n", 2, 0.2), Step("y=5\n", 1, 0.6), Step("#### 4\n", 1, 0.3)],
    "x=3\n": [Step("y=6\n", 1, 0.5), Step("#### 6\n", 1, 0.4)],
    "x=2\ny=4\n": [Step("#### 4\n", 3, 0.05), Step("#### 5\n", 1, 0.7)],
    "x=2\ny=5\n": [Step("#### 5\n", 1, 0.5)],
    "x=3\ny=6\n": [Step("#### 6\n", 1, 0.3)],
}


def summary(tree) -> list[tuple]:
    """A tree as comparable rows: (seed path, raw text, status, answer)."""
    return [(n.seed_path, n.raw_text, n.status, n.answer) for n in tree.nodes[1:]]


@dataclass
class HiddenVerifier:
    """A verifier with known values: P(backtrack) is ``hidden[:, 0]``."""

    hidden_size: int = 4
    calls: int = 0

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if hidden.shape[-1] != self.hidden_size:
            raise RuntimeError(f"expected hidden size {self.hidden_size}, got {hidden.shape[-1]}")
        return hidden[:, 0].clamp(0, 1)
