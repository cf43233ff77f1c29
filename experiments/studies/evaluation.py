"""``rewind eval`` as a study: one inference method on N held-out problems → ``results.jsonl`` +
``summary.md``, resumable and sharded.

Runs sharded, unchanged, under ``torchrun --nproc_per_node W -m experiments.commands.cli eval ...``:
rank r takes every W-th problem and writes ``results.rank{r}.jsonl``; rank 0 merges them into
``results.jsonl`` (see ``experiments.studies.shard``). A rerun with the same flags skips finished
problems; other flags into the same ``--out`` are refused. The per-problem solver is
``experiments.studies.evaluate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from experiments.inputs import check_config, check_source, config_hash, load_problems, load_source
from experiments.studies.shard import done_keys, evaluate_shard, finish, problem_order, shard_from_env
from experiments.studies.stats import fmt, summarize
from policy.atomic import atomic_write_text
from search.config import SearchConfig, make_config, parse_knobs
from search.knobs import knob, knob_of

__all__ = ["EvalConfig", "run_eval"]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    out: str = knob(None, "results folder: config.json, results.jsonl, summary.md (and trees/); a rerun with the "
                    "same flags (or a larger --n) resumes")
    run: str | None = knob(None, "a run folder (policy/ and verifier/), a policy folder, or a hub model name")
    model: str | None = knob(None, "same as --run (a model name or folder; for --task gsm8k with a real model)")
    method: Literal["decode", "decode-soft", "greedy", "best_of_n", "beam", "mcts"] = knob(
        "beam", "decode (greedy with rewind), decode-soft (⟨b⟩ kept in the cache), or a search strategy")
    task: Literal["builtin", "gsm8k"] = knob("builtin", "problems: the built-in generator or GSM8K")
    split: str = knob("test", "builtin: train/validation/test; gsm8k: train/test or a JSONL path")
    n: int = knob(100, "problems to evaluate (>= 1): the first N of the split")
    seed: int = knob(0, "problem seed (builtin) and search seed")
    threshold: float = knob_of(SearchConfig, "threshold")
    signal: Literal["auto", "verifier", "policy"] = knob(
        "auto", "pruning signal: the run's verifier, the policy's own P(⟨b⟩), or auto (verifier if the run has one)")
    knobs: str = knob("", "search knobs as KEY=VALUE,... (e.g. width=4,samples=4 or simulations=32)")
    batch_size: int = knob(8, "problems solved together (>= 1)")
    max_new_tokens: int = knob(320, "decoders: longest generation in tokens (>= 1)")
    trees: int = knob(0, "search: save the trees of the first N problems to OUT/trees/ (>= 0)")

    def __post_init__(self) -> None:
        check_source(self.run, self.model, self.out)
        for name, low in (("n", 1), ("batch_size", 1), ("max_new_tokens", 1), ("trees", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        knobs = parse_knobs(self.knobs)
        if self.method in ("decode", "decode-soft") and knobs:
            raise ValueError(f"method {self.method!r} is a plain decoder and takes no search knobs (got {self.knobs!r})")
        if self.method not in ("decode", "decode-soft"):
            make_config(self.method, None, self.threshold, seed=self.seed, **knobs)  # unknown/bad knobs fail here

    @property
    def source(self) -> str:
        return self.run or self.model  # type: ignore[return-value]


def run_eval(config: EvalConfig, *, progress: bool = True) -> list[dict] | None:
    """Evaluate as configured on this process's shard; rank 0 returns the merged rows (others None)."""
    shard = shard_from_env()
    out = Path(config.out)
    problems = load_problems(config.task, config.n, seed=config.seed, split=config.split)
    signal = "policy" if config.method in ("decode", "decode-soft") else config.signal
    policy, verifier, ident = load_source(config.source, signal=signal)
    # n may grow on a rerun (the first N problems of a split do not change): only the new ones run
    ignore = ("batch_size", "trees", "n")
    h = config_hash(config, ignore=ignore, source=ident)
    check_config(out, {"config_hash": h, "config": dataclasses.asdict(config), "source": ident}, command="eval",
                 ignore=ignore)
    kw: dict[str, Any] = dict(policy=policy, method=config.method, seed=config.seed, batch_size=config.batch_size,
                              progress=progress, extra={"config_hash": h})
    if config.method in ("decode", "decode-soft"):
        kw["max_new_tokens"] = config.max_new_tokens
    else:
        kw.update(verifier=verifier, threshold=config.threshold, **parse_knobs(config.knobs))
        if config.trees:
            kw.update(trees_dir=out / "trees", trees_limit=config.trees)
    evaluate_shard(problems, out, shard, tag=config.method, done=done_keys(out), **kw)
    ids = {str(p.id) for p in problems}
    rows = finish(out, shard, order=problem_order(p.id for p in problems),
                  keep=lambda r: r.get("config_hash") == h and str(r.get("problem_id")) in ids)
    if rows is not None:
        _write_summary(out, config, rows, ident)
    return rows


def _write_summary(out: Path, config: EvalConfig, rows: list[dict], ident: dict) -> str:
    s = summarize(rows)
    text = (f"# rewind eval: {config.method} on {s['n']} {config.task} problems\n\n"
            f"policy: `{ident['policy']}`; pruning signal: {'verifier' if ident['verifier'] else 'policy P(⟨b⟩)'}; "
            f"threshold {config.threshold}; knobs: `{config.knobs or '-'}`\n\n"
            "| method | n | accuracy | 95% CI (Wilson) | tokens generated | tokens run | nodes expanded | "
            "nodes pruned | wall s/problem |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {config.method} | {s['n']} | {s['accuracy']:.3f} | [{s['ci_low']:.3f}, {s['ci_high']:.3f}] | "
            f"{fmt(s['tokens_generated'])} | {fmt(s['tokens_run'])} | {fmt(s['nodes_expanded'])} | "
            f"{fmt(s['nodes_pruned'])} | {fmt(s['wall_s'], 3)} |\n")
    atomic_write_text(out / "summary.md", text)
    return text
