"""Threshold sweep: accuracy and cost of one search strategy over a grid of pruning thresholds.

Two sources per threshold τ, marked in every row (``source``):

- ``live``: the strategy run at τ on every problem;
- ``replay``: the live run at τ = 1 (which prunes nothing) is recorded once per problem
  (``OUT/trees/``) and ``search.replay`` recomputes its outcome at each τ without the model. A
  replay is ``exact`` when the recorded tree held every child τ's run asks for; where exact, its
  answer should equal the live one (DESIGN §5), and the summary says how often it does.

Writes ``config.json``, ``results.jsonl`` (one row per (tag, problem), tag ``live@τ`` or
``replay@τ``), ``summary.md``, ``accuracy_vs_threshold.png`` and ``accuracy_vs_tokens.png``.
Resumable and sharded like ``rewind eval`` (``experiments.studies.shard``).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

import search
from experiments.inputs import check_config, check_source, config_hash, load_problems, load_source
from experiments.studies.plots import plot_accuracy_vs_threshold, plot_accuracy_vs_tokens
from experiments.studies.shard import (
    done_keys,
    evaluate_shard,
    finish,
    problem_order,
    rank_path,
    shard_from_env,
    take_shard,
)
from experiments.studies.stats import fmt, summarize
from policy.atomic import append_jsonl, atomic_write_text
from policy.data import answers_match
from search.config import make_config, parse_knobs
from search.knobs import knob

__all__ = ["SweepConfig", "parse_thresholds", "replay_rows", "run_sweep", "summary_table"]


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One strategy, one policy (+ verifier), a grid of thresholds, N problems."""

    out: str = knob(None, "results folder: config.json, results.jsonl, summary.md, plots, trees/")
    run: str | None = knob(None, "a run folder (policy/ and verifier/), a policy folder, or a hub model name")
    model: str | None = knob(None, "same as --run (a model name or folder; for --task gsm8k with a real model)")
    strategy: Literal["greedy", "best_of_n", "beam", "mcts"] = knob("beam", "search strategy")
    signal: Literal["verifier", "policy"] = knob("verifier", "pruning signal: the run's verifier or the policy's P(⟨b⟩)")
    thresholds: str = knob("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
                           "comma-separated thresholds in [0, 1]; 1.0 (the recorded run) is always included")
    task: Literal["builtin", "gsm8k"] = knob("builtin", "problems: the built-in generator or GSM8K")
    split: str = knob("test", "builtin: train/validation/test; gsm8k: train/test or a JSONL path")
    n: int = knob(100, "problems (>= 1): the first N of the split")
    seed: int = knob(0, "problem seed (builtin) and search seed")
    knobs: str = knob("", "search knobs as KEY=VALUE,... (e.g. width=4,samples=4)")
    batch_size: int = knob(8, "problems solved together (>= 1)")
    no_replay: bool = knob(False, "live runs only (no recorded trees, no replay rows)", flag=True)

    def __post_init__(self) -> None:
        check_source(self.run, self.model, self.out)
        if self.n < 1 or self.batch_size < 1:
            raise ValueError("n and batch_size must be >= 1")
        parse_thresholds(self.thresholds)
        make_config(self.strategy, None, 1.0, seed=self.seed, **parse_knobs(self.knobs))

    @property
    def source(self) -> str:
        return self.run or self.model  # type: ignore[return-value]

    @property
    def grid(self) -> list[float]:
        return parse_thresholds(self.thresholds)


def parse_thresholds(text: str) -> list[float]:
    """Sorted distinct thresholds of ``"0.1,0.5"``, with 1.0 added (the recorded, unpruned run)."""
    try:
        values = {float(t) for t in str(text).split(",") if t.strip()}
    except ValueError as e:
        raise ValueError(f"thresholds must be comma-separated numbers, got {text!r}") from e
    bad = [t for t in values if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"thresholds must lie in [0, 1], got {sorted(bad)}")
    return sorted(values | {1.0})


def _tag(source: str, tau: float) -> str:
    return f"{source}@{tau:g}"


def _tree_path(out: Path, problem_id: str) -> Path:
    return out / "trees" / f"{_tag('live', 1.0)}-{problem_id}.json"


def replay_rows(out: Path, problems: list, grid: list[float], *, done: set, extra: dict,
                progress: bool = True) -> list[dict]:
    """Replay each problem's recorded tree at every τ of ``grid`` not yet done; append the rows to
    this rank's file by the caller's ``out`` (the rank path)."""
    rows = []
    for p in tqdm(problems, desc="replay", unit="problem", disable=not progress):
        todo = [t for t in grid if (_tag("replay", t), str(p.id)) not in done]
        if not todo:
            continue
        tree = search.load_tree(_tree_path(out, p.id))
        for tau in todo:
            t0 = time.perf_counter()
            r = search.replay(tree, tau)
            stats = {**r.stats, "wall_s": time.perf_counter() - t0}
            rows.append({"tag": _tag("replay", tau), "source": "replay", "method": tree.config.get("strategy"),
                         "threshold": tau, "problem_id": p.id, "answer": r.answer, "reference": p.answer,
                         "correct": bool(answers_match(r.answer, p.answer)), "exact": r.exact,
                         "missing": len(r.missing), "stats": stats, **extra})
    return rows


def run_sweep(config: SweepConfig, *, progress: bool = True) -> list[dict] | None:
    """Run the sweep on this process's shard; rank 0 merges and writes the summary and plots
    (returns the merged rows; other ranks return None)."""
    shard = shard_from_env()
    out = Path(config.out)
    problems = load_problems(config.task, config.n, seed=config.seed, split=config.split)
    policy, verifier, ident = load_source(config.source, signal=config.signal)
    ignore = ("batch_size", "n")  # a larger --n on a rerun only adds problems
    h = config_hash(config, ignore=ignore, source=ident)
    check_config(out, {"config_hash": h, "config": dataclasses.asdict(config), "grid": config.grid, "source": ident},
                 command="sweep", ignore=ignore)
    done = done_keys(out)
    # the recorded run first (τ = 1), so the replay can start while nothing else is pending
    for tau in sorted(config.grid, key=lambda t: t != 1.0):
        evaluate_shard(problems, out, shard, tag=_tag("live", tau), done=done, policy=policy, verifier=verifier,
                       method=config.strategy, threshold=tau, seed=config.seed, batch_size=config.batch_size,
                       progress=progress, extra={"config_hash": h, "source": "live"},
                       trees_dir=out / "trees" if tau == 1.0 and not config.no_replay else None,
                       **parse_knobs(config.knobs))
    if not config.no_replay:
        mine = take_shard(problems, shard)
        for row in replay_rows(out, mine, config.grid, done=done, extra={"config_hash": h}, progress=progress):
            append_jsonl(rank_path(out, shard[0]), row)
    order = problem_order(p.id for p in problems)
    ids = {str(p.id) for p in problems}
    rows = finish(out, shard, order=lambda r: (r.get("threshold") or 0.0, *order(r)),
                  keep=lambda r: r.get("config_hash") == h and str(r.get("problem_id")) in ids)
    if rows is not None:
        write_report(out, config, rows)
    return rows


def _groups(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("source", "live"), float(r["threshold"]))].append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])))


def replay_agreement(rows: list[dict]) -> dict[float, dict[str, int]]:
    """Per τ: replays, exact replays, and exact replays whose answer equals the live run's."""
    live = {(float(r["threshold"]), r["problem_id"]): r for r in rows if r.get("source", "live") == "live"}
    out: dict[float, dict[str, int]] = {}
    for r in rows:
        if r.get("source") != "replay":
            continue
        tau = float(r["threshold"])
        c = out.setdefault(tau, {"replays": 0, "exact": 0, "compared": 0, "agree": 0})
        c["replays"] += 1
        if r.get("exact"):
            c["exact"] += 1
            twin = live.get((tau, r["problem_id"]))
            if twin is not None:
                c["compared"] += 1
                c["agree"] += int(twin.get("answer") == r.get("answer"))
    return out


def summary_table(rows: list[dict]) -> str:
    """The Markdown table: one line per (source, τ)."""
    agree = replay_agreement(rows)
    lines = ["| source | τ | n | accuracy | 95% CI | tokens generated | tokens run | nodes expanded | nodes pruned | "
             "wall s/problem | replay exact | agrees with live (exact) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (source, tau), group in _groups(rows).items():
        s = summarize(group)
        a = agree.get(tau) if source == "replay" else None
        exact = f"{a['exact']}/{a['replays']}" if a else "–"
        agrees = f"{a['agree']}/{a['compared']}" if a else "–"
        lines.append(f"| {source} | {tau:g} | {s['n']} | {s['accuracy']:.3f} | [{s['ci_low']:.3f}, {s['ci_high']:.3f}] "
                     f"| {fmt(s['tokens_generated'])} | {fmt(s['tokens_run'])} | {fmt(s['nodes_expanded'])} | "
                     f"{fmt(s['nodes_pruned'])} | {fmt(s['wall_s'], 3)} | {exact} | {agrees} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, config: SweepConfig, rows: list[dict]) -> None:
    """``summary.md`` and the two plots from the merged rows."""
    by_tau: dict[str, list] = defaultdict(list)
    by_tokens: dict[str, list] = defaultdict(list)
    for (source, tau), group in _groups(rows).items():
        s = summarize(group)
        by_tau[source].append((tau, s["accuracy"], s["ci_low"], s["ci_high"]))
        if s["tokens_generated"]:
            by_tokens[source].append((s["tokens_generated"], s["accuracy"], s["ci_low"], s["ci_high"]))
    what = f"{config.strategy} ({config.signal} pruning) on {config.n} {config.task} problems"
    plot_accuracy_vs_threshold(by_tau, out / "accuracy_vs_threshold.png", title=f"accuracy vs threshold: {what}")
    plot_accuracy_vs_tokens(by_tokens, out / "accuracy_vs_tokens.png", title=f"accuracy vs tokens: {what}")
    agree = replay_agreement(rows)
    n_rep = sum(a["replays"] for a in agree.values())
    n_exact = sum(a["exact"] for a in agree.values())
    n_cmp = sum(a["compared"] for a in agree.values())
    n_agree = sum(a["agree"] for a in agree.values())
    note = (f"Replay of the recorded τ=1 search: exact in {n_exact}/{n_rep} (problem, τ) pairs; where exact, its answer "
            f"equals the live run's in {n_agree}/{n_cmp}.\n" if n_rep else "No replay (--no-replay).\n")
    text = (f"# Threshold sweep: {what}\n\nsource `{config.source}`; knobs `{config.knobs or '-'}`; seed {config.seed}\n\n"
            f"{summary_table(rows)}\n{note}\n![accuracy vs threshold](accuracy_vs_threshold.png)\n"
            "![accuracy vs tokens](accuracy_vs_tokens.png)\n")
    atomic_write_text(out / "summary.md", text)
