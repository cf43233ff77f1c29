"""``search.solve(problem)`` and ``search.solve_many(problems)``: the public entry points.

Everything that can be wrong with the input (strategy, knobs, threshold, question, a verifier
for another policy) raises ``ValueError`` before any model work. Then all prompts are prefilled
in one batch and every strategy runs in the round loop of ``search/driver.py``; a problem that
exhausts its budget returns ``Solution(answer=None)`` with ``stats["reason"]``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from search.config import BeamConfig, SearchConfig, make_config
from search.defaults import load_parts
from search.driver import drive
from search.interfaces import PolicyEngine, StepRequest, StepSample, StepView
from search.run import ENDING_STOP_REASONS, Drawn, Expand, SearchRun
from search.seeding import child_seeds
from search.tree import ROOT, Tree

__all__ = ["Solution", "pruning_threshold", "solve", "solve_many"]


@dataclass(frozen=True)
class Solution:
    """The result of one search. ``tree.chosen`` holds the node ids from the root to the answer."""

    answer: str | None  # final answer; None when the search found none (see stats["reason"])
    text: str | None  # alive solution text of the chosen path (prompt excluded)
    tree: Tree
    stats: dict[str, Any]  # see search.accounting
    problem_id: str | None = None


def solve(
    problem: Any,
    *,
    strategy: str | None = None,
    threshold: float | None = None,
    policy: Any = None,
    verifier: Any = None,
    config: SearchConfig | None = None,
    **knobs: Any,
) -> Solution:
    """Search for a solution of ``problem`` (a question string, or an object with ``.question``).

    ``strategy`` is one of ``search.STRATEGIES`` (default ``"beam"``, or ``config``'s);
    ``threshold`` prunes nodes whose P(backtrack) is at least it (default: the verifier's calibrated
    ``default_threshold`` when it has one, else the config's 0.5); ``knobs`` are
    fields of the strategy's config (``width``, ``samples``, ``simulations``, ``seed``, ...).
    ``policy`` offers ``.engine(share_kv=...)`` or is a ``PolicyEngine``; ``verifier`` offers
    ``.score(hidden [N, H]) -> [N]`` or is None (the policy's P(⟨b⟩) prunes). With neither
    given, the default run (``rewind demo``) supplies both.
    """
    return solve_many([problem], strategy=strategy, threshold=threshold, policy=policy,
                      verifier=verifier, config=config, **knobs)[0]


def pruning_threshold(cfg: SearchConfig, verifier: Any, *, given: bool) -> float:
    """The threshold a search prunes at: ``cfg``'s when a threshold, config or knob set it
    (``given``), else the verifier's calibrated ``default_threshold`` (set by its training) when it
    has one, else ``cfg``'s default."""
    calibrated = getattr(verifier, "default_threshold", None)
    return cfg.threshold if given or calibrated is None else float(calibrated)


def solve_many(
    problems: Iterable[Any],
    *,
    strategy: str | None = None,
    threshold: float | None = None,
    policy: Any = None,
    verifier: Any = None,
    config: SearchConfig | None = None,
    **knobs: Any,
) -> list[Solution]:
    """``solve`` for many problems at once: every round expands all problems in one batch."""
    cfg = make_config(strategy, config, threshold, **knobs)
    if isinstance(problems, (str, bytes)) or hasattr(problems, "question"):
        raise ValueError("solve_many takes a list of problems; use solve() for one")
    if not isinstance(problems, Iterable):
        raise ValueError(f"solve_many takes a list of problems, got {type(problems).__name__}")
    problems = list(problems)
    questions = [_question(p, cfg) for p in problems]
    if not problems:
        return []
    policy, verifier = load_parts(policy, verifier)  # None or a path: through the composition root
    given = threshold is not None or config is not None or "threshold" in knobs
    cfg = dataclasses.replace(cfg, threshold=pruning_threshold(cfg, verifier, given=given))
    engine = _engine(policy, cfg)
    _check_verifier(verifier, engine.hidden_size)
    if verifier is None and isinstance(cfg, BeamConfig) and cfg.rank == "verifier":
        # With no verifier the only P(backtrack) is the policy's own ⟨b⟩ probability, ~1e-8 on most
        # steps of a model never taught to backtrack: noise as a ranking. Path log-prob ranks instead.
        cfg = dataclasses.replace(cfg, rank="logprob")

    start = time.perf_counter()
    prompts = engine.start(questions)
    runs = []
    for p, q, prompt in zip(problems, questions, prompts, strict=True):
        run = SearchRun(tree=Tree(question=q, config=cfg.to_dict()), config=cfg, release_state=engine.release,
                        problem_id=_problem_id(p))
        run.set_root(prompt.ids, prompt.text, state=prompt.state, kv_bytes=prompt.kv_bytes,
                     tokens_run=prompt.tokens_run)
        runs.append(run)
    outcomes = drive(runs, _EngineSource(engine, verifier, cfg), start=start)

    solutions = []
    for run, (outcome, wall) in zip(runs, outcomes, strict=True):
        tree, text, answer = run.tree, None, None
        if outcome.chosen is not None:
            tree.chosen = tree.path(outcome.chosen)
            answer = tree.nodes[outcome.chosen].answer
            text = engine.solution_text(run.prompt_state, tree.alive_ids(outcome.chosen))
        tree.stats = run.acct.stats(tree, wall_s=wall, reason=outcome.reason)
        if outcome.votes is not None:
            tree.stats["votes"] = dict(outcome.votes)
        solutions.append(Solution(answer=answer, text=text, tree=tree, stats=tree.stats, problem_id=run.problem_id))
    return solutions


class _EngineSource:
    """Draws children through the engine: one ``expand`` per temperature, one verifier call per round."""

    def __init__(self, engine: PolicyEngine, verifier: Any, config: SearchConfig) -> None:
        self.engine, self.verifier, self.config = engine, verifier, config

    def draw(self, batch: Sequence[tuple[SearchRun, Expand]]) -> list[list[Drawn]]:
        cfg = self.config
        by_temperature: dict[float, list[int]] = defaultdict(list)
        for k, (_, req) in enumerate(batch):
            by_temperature[req.temperature].append(k)
        samples: list[tuple[StepSample, ...]] = [()] * len(batch)
        for temperature, idx in by_temperature.items():
            requests = [self._request(*batch[k]) for k in idx]
            try:
                results = self.engine.expand(requests, temperature=temperature, top_p=cfg.top_p,
                                             max_step_tokens=cfg.max_step_tokens)
            except MemoryError:  # free what this round drew already; the driver gives up one problem
                for s in (s for ss in samples for s in ss if s.state is not None):
                    self.engine.release(s.state)
                raise
            if len(results) != len(requests):
                raise RuntimeError(f"engine.expand returned {len(results)} results for {len(requests)} requests")
            for k, req, res in zip(idx, requests, results):
                if len(res.samples) != len(req.seeds):
                    raise RuntimeError(f"engine.expand drew {len(res.samples)} samples for {len(req.seeds)} seeds")
                run = batch[k][0]
                run.acct.tokens_run += res.tokens_run
                run.acct.tokens_saved += res.tokens_saved
                samples[k] = res.samples
        scores = self._score(batch, samples)
        return [[_drawn(s, p, req) for s, p in zip(ss, ps)] for ss, ps, (_, req) in zip(samples, scores, batch)]

    def _request(self, run: SearchRun, req: Expand) -> StepRequest:
        if req.node not in run.handles:
            raise RuntimeError(f"strategy {run.config.strategy!r} expanded node {req.node}, whose KV was released")
        node = run.tree.nodes[req.node]
        seeds = child_seeds(self.config.seed, node.seed_path, len(run.tree.children[req.node]), req.count)
        return StepRequest(state=run.handles[req.node], seeds=seeds, depth=node.depth, prefix=tuple(req.prefix),
                           ban=req.ban)

    def _score(self, batch: Sequence[tuple[SearchRun, Expand]],
               samples: list[tuple[StepSample, ...]]) -> list[list[float | None]]:
        """P(backtrack) per sample: the verifier's (one call for the round) or the policy's own."""
        scores: list[list[float | None]] = [
            [None if s.rejected else float(s.p_backtrack_policy) for s in ss] for ss in samples
        ]
        if self.verifier is None:
            return scores
        where = [(k, j) for k, ss in enumerate(samples) for j, s in enumerate(ss) if not s.rejected]
        if not where:
            return scores
        with torch.no_grad():
            if callable(getattr(self.verifier, "score_steps", None)):  # a step verifier reads whole steps
                views = [self._view(batch[k][0], batch[k][1].node, samples[k][j]) for k, j in where]
                probs = self.verifier.score_steps(views).reshape(-1).tolist()
            else:
                hidden = [samples[k][j].hidden for k, j in where]
                if any(h is None for h in hidden):
                    raise RuntimeError("the engine returned a sample without a hidden state; the verifier needs one")
                probs = self.verifier.score(torch.stack([h.float() for h in hidden])).reshape(-1).tolist()
        scored: dict[int, int] = defaultdict(int)
        for (k, j), p in zip(where, probs, strict=True):
            scores[k][j] = float(p)
            scored[id(batch[k][0])] += 1
        for run in {id(r): r for r, _ in batch}.values():
            if scored[id(run)]:
                run.acct.verifier_calls += 1
                run.acct.nodes_scored += scored[id(run)]
        return scores


    @staticmethod
    def _view(run: SearchRun, parent: int, sample: StepSample) -> StepView:
        tree = run.tree
        return StepView.of(sample, tree.nodes[parent].depth + 1, prefix=tree.solution_text(parent),
                           prompt=tree.nodes[ROOT].text)


def _drawn(s: StepSample, p: float | None, req: Expand) -> Drawn:
    ends = s.finished or s.stop_reason in ENDING_STOP_REASONS
    stop = s.stop_reason if (s.stop_reason in ENDING_STOP_REASONS) == ends else ("eos" if ends else "newline")
    fields = dict(ids=tuple(s.ids), raw_ids=tuple(s.raw_ids), text=s.text, raw_text=s.raw_text,
                  logprob=float(s.logprob), p_backtrack=p, p_backtrack_policy=float(s.p_backtrack_policy),
                  answer=s.answer if ends and not s.rejected else None, backtracks=tuple(s.backtracks),
                  stop_reason="rejected" if s.rejected else stop, forced=len(req.prefix), banned=req.ban,
                  token_logprobs=_token_logprobs(s))
    return Drawn(fields=fields, rejected=bool(s.rejected), state=s.state, kv_bytes=int(s.kv_bytes))


def _token_logprobs(s: StepSample) -> tuple[float, ...]:
    """The alive tokens' log-probs, when the engine gave one per alive token."""
    lp = s.step_logprobs
    if lp is None or s.rejected or len(lp) != len(s.ids):
        return ()
    return tuple(float(x) for x in lp.tolist())


def _question(problem: Any, cfg: SearchConfig) -> str:
    q = problem.get("question") if isinstance(problem, Mapping) else problem
    q = q if isinstance(q, str) else getattr(q, "question", None)
    if not isinstance(q, str):
        raise ValueError(f"a problem is a question string or has a .question string; got {type(problem).__name__}")
    if not q.strip():
        raise ValueError("the question is empty")
    if len(q) > cfg.max_question_chars:
        raise ValueError(f"the question has {len(q)} characters, more than max_question_chars={cfg.max_question_chars}")
    return q


def _problem_id(problem: Any) -> str | None:
    pid = problem.get("id") if isinstance(problem, Mapping) else getattr(problem, "id", None)
    return None if pid is None else str(pid)


def _engine(policy: Any, cfg: SearchConfig) -> PolicyEngine:
    if callable(getattr(policy, "engine", None)):
        engine = policy.engine(**cfg.engine_options())
    else:
        engine = policy
    if not isinstance(engine, PolicyEngine):
        raise ValueError(f"policy must offer .engine(share_kv=...) or be a PolicyEngine; got {type(policy).__name__}")
    return engine


def _check_verifier(verifier: Any, hidden_size: int) -> None:
    """A verifier must read hidden states of the policy's width: check its ``hidden_size``, or probe it."""
    if verifier is None:
        return
    if callable(getattr(verifier, "score_steps", None)):
        size = getattr(verifier, "hidden_size", None)
        if size is not None and int(size) != int(hidden_size):
            raise ValueError(f"the verifier reads hidden states of size {size} but the policy's are {hidden_size}: "
                             "it was trained for another policy")
        return
    if not callable(getattr(verifier, "score", None)):
        raise ValueError(f"verifier must offer .score(hidden) -> P(backtrack); got {type(verifier).__name__}")
    size = getattr(verifier, "hidden_size", None)
    if size is not None:
        if int(size) != int(hidden_size):
            raise ValueError(f"the verifier reads hidden states of size {size} but the policy's are {hidden_size}: "
                             "it was trained for another policy")
        return
    params = getattr(verifier, "parameters", None)
    device = next(iter(params()), torch.empty(0)).device if callable(params) else torch.device("cpu")
    try:
        with torch.no_grad():
            out = verifier.score(torch.zeros(1, hidden_size, device=device))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"the verifier cannot score hidden states of size {hidden_size} ({e}); "
                         "it was trained for another policy") from e
    if tuple(out.reshape(-1).shape) != (1,):
        raise ValueError(f"verifier.score must return one probability per hidden state; got shape {tuple(out.shape)}")
