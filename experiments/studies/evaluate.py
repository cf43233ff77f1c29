"""Evaluate one inference method on a set of problems, appending one JSON line per problem.

Methods are the search strategies (``greedy``, ``best_of_n``, ``beam``, ``mcts``) and two plain
decoders: ``decode`` (greedy with rewind) and ``decode-soft`` (⟨b⟩ kept in the cache: the soft
ablation). Results are appended as they finish (``policy.atomic.append_jsonl``); a rerun skips
problems already in the file under the same ``tag``, so an interrupted run resumes and never
writes a problem twice. ``shard=(rank, world)`` evaluates every ``world``-th problem. Rows of the
decoders carry ``stats["b_effects"]``: what each ⟨b⟩-run did (``experiments.studies.backtracks``;
rows written before it lack the key).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import search
from experiments.studies.backtracks import backtrack_effects
from experiments.studies.stats import wilson
from policy.atomic import append_jsonl, atomic_write_text
from policy.data import answers_match, extract_answer, format_prompt
from policy.generate import generate
from search.config import SearchConfig
from search.solve import pruning_threshold

__all__ = ["DECODERS", "METHODS", "evaluate", "read_results", "write_summary"]

DECODERS = ("decode", "decode-soft")
METHODS = DECODERS + ("greedy", "best_of_n", "beam", "mcts")


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results JSONL. A torn *last* line (a killed writer) is skipped; a bad line
    elsewhere is an error naming its line number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                break  # torn tail of an interrupted append
            raise ValueError(f"{path}:{i}: not a JSON line ({e.msg})") from e
    return rows


def _decode_rows(problems, policy, *, rewind: bool, max_new_tokens: int, seed: int) -> list[tuple[str | None, str, dict]]:
    t0 = time.perf_counter()
    gens = generate(policy, [format_prompt(p.question) for p in problems], rewind=rewind,
                    max_new_tokens=max_new_tokens, seed=seed)
    wall = (time.perf_counter() - t0) / max(1, len(problems))

    out = []
    for g in gens:
        n_b = sum(e.length for e in g.backtracks)
        stats = {"tokens_generated": len(g.raw_ids), "backtracks": n_b, "runs": len(g.backtracks),
                 "stop_reason": g.stop_reason, "wall_s": wall, "wall_s_per_problem": wall,
                 "b_effects": backtrack_effects(policy, [g])}  # what each ⟨b⟩-run did (fix / harm / other)
        out.append((extract_answer(g.text), g.text, stats))
    return out


def evaluate(
    problems: Sequence[Any],
    *,
    policy: Any,
    method: str,
    out: str | os.PathLike,
    tag: str,
    verifier: Any = None,
    threshold: float | None = 0.5,
    batch_size: int = 8,
    shard: tuple[int, int] = (0, 1),
    max_new_tokens: int = 320,
    seed: int = 0,
    trees_dir: str | os.PathLike | None = None,
    trees_limit: int | None = None,
    progress: bool = True,
    extra: dict | None = None,
    replays: Sequence[tuple[str, float, dict]] = (),
    **knobs: Any,
) -> list[dict]:
    """Solve ``problems`` with ``method``; append rows to ``out``; return this call's rows plus
    the rows already there for ``tag`` (and this shard). With ``trees_dir``, the search trees of
    the first ``trees_limit`` problems (all when None) are saved there as JSON. ``extra`` keys
    (e.g. a config hash) are added to every new row.

    ``replays``: ``(tag, threshold, knobs)`` rows derived from each search without the model —
    ``search.replay`` of its tree at that threshold with those config changes (another vote rule,
    ``keep_last``...) — appended under their own tag wherever the replay is exact (it held every
    child the live run would draw; sampling is seeded per node path, so it is that run's outcome).
    Their rows carry ``stats["replayed"] = True`` and no wall time; a later ``evaluate`` of that tag
    runs live only the problems whose replay was not exact."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {shard} is not (rank, world) with 0 <= rank < world")
    mine = [p for i, p in enumerate(problems) if i % world == rank]
    existing = read_results(out)
    done = {r["problem_id"]: r for r in existing if r.get("tag") == tag}
    todo = [p for p in mine if p.id not in done]
    rows = [done[p.id] for p in mine if p.id in done]
    if replays and method in DECODERS:
        raise ValueError("replays derive rows from search trees: the decoders have none")
    derived = {t: {r["problem_id"] for r in existing if r.get("tag") == t} for t, _, _ in replays}
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=tag, unit="problem", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        if method in DECODERS:
            results = _decode_rows(chunk, policy, rewind=method == "decode", max_new_tokens=max_new_tokens, seed=seed)
        else:
            sols = search.solve_many(chunk, strategy=method, threshold=threshold, policy=policy, verifier=verifier,
                                     seed=seed, **knobs)
            # a batch's wall time is shared by its problems: record the per-problem share too
            results = [(s.answer, s.text, {**s.stats, "wall_s_per_problem": s.stats.get("wall_s", 0.0) / len(chunk)})
                       for s in sols]
            if trees_dir is not None:
                for p, s in zip(chunk, sols):
                    if trees_limit is None or mine.index(p) < trees_limit:
                        search.export_tree(s, Path(trees_dir) / f"{tag}-{p.id}.json")
            for rtag, rthreshold, rknobs in replays:
                for p, s in zip(chunk, sols):
                    if p.id in derived[rtag]:
                        continue
                    r = search.replay(s.tree, rthreshold, **rknobs)
                    if r.exact:
                        append_jsonl(out, _row(rtag, method, _used_threshold(rthreshold, verifier, {}), p, r.answer,
                                               r.text, {**r.stats, "replayed": True}, extra))
        for p, (answer, text, stats) in zip(chunk, results):
            row = _row(tag, method, None if method in DECODERS else _used_threshold(threshold, verifier, knobs), p,
                       answer, text, stats, extra)
            append_jsonl(out, row)
            rows.append(row)
        bar.update(len(chunk))
    bar.close()
    return rows


def _row(tag: str, method: str, threshold: float | None, problem, answer, text, stats: dict, extra: dict | None) -> dict:
    return {"tag": tag, "method": method, "threshold": threshold, "problem_id": problem.id, "answer": answer,
            "reference": problem.answer, "correct": bool(answers_match(answer, problem.answer)), "text": text,
            "stats": stats, **(extra or {})}


def _used_threshold(threshold: float | None, verifier: Any, knobs: dict) -> float:
    """The threshold ``search.solve_many`` prunes at for these arguments (``search.solve.pruning_threshold``)."""
    t = threshold if threshold is not None else knobs.get("threshold")
    return pruning_threshold(SearchConfig() if t is None else SearchConfig(threshold=t), verifier, given=t is not None)


def method_row(rows: Sequence[dict]) -> dict:
    """One method's result rows in numbers: correct, n, accuracy, its 95% Wilson interval, mean
    generated tokens per problem, and right/wrong per problem id (for paired tests)."""
    k, n = sum(r["correct"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    toks = [r["stats"].get("tokens_generated", 0) for r in rows]
    return {"correct": k, "n": n, "accuracy": k / n, "ci95": [lo, hi], "tokens_generated": sum(toks) / n,
            "by_problem": {r["problem_id"]: bool(r["correct"]) for r in rows}}


def write_summary(out: str | os.PathLike, lines: Sequence[str]) -> int:
    """A study's last step: its table lines to ``out/summary.md`` and to stdout; the exit status 0."""
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(out) / "summary.md", text)
    print(text)
    return 0
