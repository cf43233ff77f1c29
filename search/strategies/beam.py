"""Step-level beam search: ``width`` beams, ``samples`` children per beam, keep the best.

The root draws ``width × samples`` children (``root_samples``), so the first step is as wide as
every later round; after that each round every beam draws ``samples`` children; pruned and rejected children drop out,
terminal ones are set aside, and the best ``width`` open children (by lowest P(backtrack),
ties by path log-prob, or by path log-prob alone) become the next beams. The others release
their KV at once. The answer is the best terminal node by the same ranking. With ``distinct``,
open siblings that are the same step (same alive tokens) count once, so the beams are different
paths; when fewer than W distinct children survive, the next round draws fewer. With
``keep_last``, a round whose children are all pruned, while no answer exists, keeps the best of
them: the threshold drops alternatives, it never leaves the search with nothing.

Lazy siblings (``accept``): instead of all M children at once, each beam draws one child at a
time and stops once one of its children scores P(error) < ``accept`` (the root: once W of its
children do), up to M (W×M at the root). A child is drawn at the seed path it has in the full
beam, so the lazy beam's children are a subset of the full beam's: only the siblings of a step the
verifier already accepts go undrawn — the tokens the full beam spends on them are the saving.

Rewrites (``rewrite``): when every child a beam drew scores P(error) >= ``rewrite_at``, the beam
draws ``rewrite`` more children that keep its best child's step up to the token the policy was
least sure of and choose that token again, never the same one: hard backtracking into the step,
where a fresh sample of the whole step would most often repeat the same mistake. The kept prefix
is fed again and its tokens count as generated.

Early stop (``early_stop``, verifier ranking with aggregate ``max`` or ``prod``): a path's
score can only get worse as it grows (``max`` of more steps, ``1 - prod(1 - p)`` over more
steps), so once a finished answer's path score is strictly below every open beam's, no
descendant of the beams can outrank it: the search stops there with the answer it would have
returned anyway, and the rounds it skips are tokens saved (``tests/test_search_beam_stop.py``
checks the answers are the same).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from search.config import BeamConfig
from search.run import Expand, Outcome, SearchRun, path_p
from search.tree import ROOT
from search.vote import no_answer

__all__ = ["beam", "branch_point", "rank_key"]


def rank_key(run: SearchRun, rank: str, aggregate: str = "last") -> Callable[[int], tuple[float, float, int]]:
    """Sort key of nodes, best first; node id breaks ties so the search is deterministic."""
    keys = {
        "verifier": lambda n: (path_p(run, n, aggregate), -run.path_logprob(n), n),
        "logprob": lambda n: (-run.path_logprob(n), path_p(run, n, aggregate), n),
    }
    return keys[rank]


def beam(run: SearchRun, config: BeamConfig) -> Generator[list[Expand], None, Outcome]:
    key = rank_key(run, config.rank, config.aggregate)
    root_samples = config.root_samples or config.width * config.samples
    frontier = [ROOT]
    keep = config.rewrite > 0  # a rewrite round draws from the same nodes again
    while frontier:
        if config.accept is None:
            yield [Expand(n, root_samples if n == ROOT else config.samples, config.temperature, keep=keep)
                   for n in frontier]
        else:
            yield from _lazy_round(run, config, frontier, root_samples)
        if keep:
            rewrites = [r for r in (_rewrite(run, config, n) for n in frontier) if r is not None]
            if rewrites:
                yield rewrites
        if keep or config.accept is not None:
            for n in frontier:
                run.release(n)
        children = sorted((c for n in frontier for c in run.open_children(n)), key=key)
        if not children and config.keep_last and not run.answers():
            children = _keep_last(run, frontier, key)
        if config.distinct:
            children = _drop_duplicates(run, children)
        frontier = children[: config.width]
        for c in children[config.width :]:
            run.tree.update(c, reason="not kept in the beam")
            run.release(c)
        if frontier and _settled(run, config, frontier):
            for c in frontier:
                run.tree.update(c, reason="early stop: a finished answer outranks every open beam")
                run.release(c)
            frontier = []
    finished = run.answers()
    if not finished:
        return no_answer(run)
    return Outcome(min(finished, key=key), "answer")


def _lazy_round(run: SearchRun, config: BeamConfig, frontier: list[int], root_samples: int):
    """One round of lazy siblings: draw until each node has enough accepted children (1; W at the
    root) or its quota (M; W×M at the root), then free the nodes' KV."""
    quota = {n: root_samples if n == ROOT else config.samples for n in frontier}
    need = {n: min(config.width, quota[n]) if n == ROOT else 1 for n in frontier}

    def accepted(n: int) -> int:
        return sum(1 for c in run.live_children(n) if run.p(c) < config.accept)

    asking = list(frontier)
    while asking:
        before = {n: len(run.tree.children[n]) for n in asking}
        counts = {n: min(max(1, need[n] - accepted(n)), quota[n] - before[n]) for n in asking}
        yield [Expand(n, counts[n], config.temperature, keep=True) for n in asking]
        # a node that got no new child (a replay whose recorded tree lacks it) has nothing more to give
        asking = [n for n in asking if before[n] < len(run.tree.children[n]) < quota[n] and accepted(n) < need[n]]


def branch_point(token_logprobs: tuple[float, ...] | list[float], n_ids: int) -> int:
    """Where a rewrite backs up to: the step's least likely alive token (the policy's least sure
    choice), never the last token when there is another (it ends the step); earliest on ties."""
    n = len(token_logprobs) if len(token_logprobs) == n_ids else 0
    if n == 0:
        return 0
    last = n - 1 if n > 1 else n
    return min(range(last), key=lambda i: (token_logprobs[i], i))


def _rewrite(run: SearchRun, config: BeamConfig, n: int) -> Expand | None:
    """The rewrites of beam ``n`` when all its drawn children score P(error) >= ``rewrite_at``:
    ``rewrite`` children that keep the best child's step up to its branch point and choose the
    token there again, never the one it chose. None when some child passes, or none has tokens."""
    drawn = [c for c in run.tree.children[n] if run.tree.nodes[c].status != "rejected"]
    if not drawn or any(run.p(c) < config.rewrite_at for c in drawn):
        return None
    best = run.tree.nodes[min(drawn, key=lambda c: (run.p(c), -run.tree.nodes[c].logprob, c))]
    if not best.ids:
        return None
    k = branch_point(best.token_logprobs, len(best.ids))
    return Expand(n, config.rewrite, config.temperature, keep=True, prefix=tuple(best.ids[:k]), ban=best.ids[k])


def _keep_last(run: SearchRun, frontier: list[int], key: Callable[[int], tuple]) -> list[int]:
    """Every child of the round was pruned (or rejected) and no answer exists: revive the pruned
    child that ranks first. Returns it when it is open (the next beam), else [] (it is terminal:
    an answer now, or a dead end)."""
    pruned = [c for n in frontier for c in run.tree.children[n] if run.tree.nodes[c].status == "pruned"]
    if not pruned:
        return []
    best = min(pruned, key=key)
    run.revive(best, "kept although pruned: every other branch of the round was pruned and no answer exists")
    return [best] if run.tree.nodes[best].status == "open" else []


def _drop_duplicates(run: SearchRun, children: list[int]) -> list[int]:
    """``children`` (best first) without the later ones whose parent and alive step tokens repeat
    an earlier one's: after hard backtracking their KV caches hold the same tokens at the same
    positions, so they are the same path. The dropped ones release their KV."""
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    kept = []
    for c in children:
        node = run.tree.nodes[c]
        first = seen.setdefault((node.parent, node.ids), c)
        if first == c:
            kept.append(c)
        else:
            run.tree.update(c, reason=f"the same step as node {first}")
            run.release(c)
    return kept


def _settled(run: SearchRun, config: BeamConfig, frontier: list[int]) -> bool:
    """True when a finished answer's path score is strictly below every open beam's (see the
    module docstring): only then is stopping exact."""
    if not config.early_stop or config.rank != "verifier" or config.aggregate not in ("max", "prod"):
        return False
    finished = run.answers()
    if not finished or any(run.tree.nodes[n].p_backtrack is None for n in finished + frontier):
        return False
    best = min(path_p(run, n, config.aggregate) for n in finished)
    return best < min(path_p(run, n, config.aggregate) for n in frontier)
