"""``rewind eval``: one inference method on N held-out problems → ``results.jsonl`` + ``summary.md``.

Every flag is a field of ``EvalConfig``. Runs sharded, unchanged, under
``torchrun --nproc_per_node W -m experiments.commands.cli eval ...``: rank r takes every W-th problem and
writes ``results.rank{r}.jsonl``; rank 0 merges them into ``results.jsonl`` (see
``experiments.studies.shard``). A rerun with the same flags skips finished problems; other flags into the
same ``--out`` are refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["EvalConfig", "add_arguments", "parse_knobs", "run", "run_eval"]


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - argparse's word
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    out: str = _f(None, "results folder: config.json, results.jsonl, summary.md (and trees/); a rerun with the "
                  "same flags (or a larger --n) resumes")
    run: str | None = _f(None, "a run folder (policy/ and verifier/), a policy folder, or a hub model name")
    model: str | None = _f(None, "same as --run (a model name or folder; for --task gsm8k with a real model)")
    method: Literal["decode", "decode-soft", "greedy", "best_of_n", "beam", "mcts"] = _f(
        "beam", "decode (greedy with rewind), decode-soft (⟨b⟩ kept in the cache), or a search strategy")
    task: Literal["builtin", "gsm8k"] = _f("builtin", "problems: the built-in generator or GSM8K")
    split: str = _f("test", "builtin: train/validation/test; gsm8k: train/test or a JSONL path")
    n: int = _f(100, "problems to evaluate (>= 1): the first N of the split")
    seed: int = _f(0, "problem seed (builtin) and search seed")
    threshold: float = _f(0.5, "search: prune a node whose P(backtrack) >= threshold, in [0, 1]")
    signal: Literal["auto", "verifier", "policy"] = _f(
        "auto", "pruning signal: the run's verifier, the policy's own P(⟨b⟩), or auto (verifier if the run has one)")
    knobs: str = _f("", "search knobs as KEY=VALUE,... (e.g. width=4,samples=4 or simulations=32)")
    batch_size: int = _f(8, "problems solved together (>= 1)")
    max_new_tokens: int = _f(320, "decoders: longest generation in tokens (>= 1)")
    trees: int = _f(0, "search: save the trees of the first N problems to OUT/trees/ (>= 0)")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out (the results folder) is required")
        if self.run and self.model and self.run != self.model:
            raise ValueError("pass either --run or --model, not both")
        if not (self.run or self.model):
            raise ValueError("pass --run RUN (a run or policy folder) or --model NAME_OR_PATH")
        for name, low in (("n", 1), ("batch_size", 1), ("max_new_tokens", 1), ("trees", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        knobs = parse_knobs(self.knobs)
        if self.method in ("decode", "decode-soft") and knobs:
            raise ValueError(f"method {self.method!r} is a plain decoder and takes no search knobs (got {self.knobs!r})")
        if self.method not in ("decode", "decode-soft"):
            from search.config import make_config

            make_config(self.method, None, self.threshold, seed=self.seed, **knobs)  # unknown/bad knobs fail here

    @property
    def source(self) -> str:
        return self.run or self.model  # type: ignore[return-value]


def parse_knobs(text: str) -> dict[str, Any]:
    """``"width=4,rank=logprob"`` → ``{"width": 4, "rank": "logprob"}`` (values read as JSON when they parse)."""
    knobs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a knob is KEY=VALUE, got {part!r}")
        try:
            knobs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            knobs[key.strip()] = value.strip()
    return knobs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from policy.train_config import add_config_arguments

    add_config_arguments(parser, EvalConfig)


def run_eval(config: EvalConfig, *, progress: bool = True) -> list[dict] | None:
    """Evaluate as configured on this process's shard; rank 0 returns the merged rows (others None)."""
    from experiments.inputs import check_config, config_hash, load_problems, load_source
    from experiments.studies.shard import done_keys, evaluate_shard, finish, problem_order, shard_from_env

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
    from experiments.studies.stats import fmt, summarize
    from policy.atomic import atomic_write_text

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


def run(args: argparse.Namespace) -> int:
    from policy.train_config import config_from_args

    config = config_from_args(args, EvalConfig)
    rows = run_eval(config)
    if rows is not None:
        print((Path(config.out) / "summary.md").read_text())
        print(f"rewind eval: wrote {Path(config.out) / 'results.jsonl'} ({len(rows)} rows)")
    return 0
