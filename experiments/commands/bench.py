"""``rewind bench``: Rewind's speed claims as ratios against their peers, measured side by side.

Writes ``OUT/bench.md`` (the table) and ``OUT/bench.json`` (rows with the raw numbers behind
them, and the machine). Every flag is a field of ``experiments.bench.config.BenchConfig``; see
``experiments/bench/suite.py`` for what each row measures.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from experiments.bench.config import BenchConfig
from experiments.bench.suite import run_bench, to_markdown
from experiments.flags import add_config_flags, config_from_args
from policy.atomic import atomic_write_json, atomic_write_text

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (BenchConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, BenchConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, BenchConfig)
    rows, meta = run_bench(cfg)
    meta["command"] = "rewind bench " + " ".join(
        x for x in (("--smoke" if cfg.smoke else ""), f"--model {cfg.model}", f"--device {cfg.device}",
                    f"--only {cfg.only}" if cfg.only else "", f"--reps {cfg.reps}" if cfg.reps else "") if x)
    table = to_markdown(rows, meta)
    out = Path(cfg.out)
    atomic_write_text(out / "bench.md", table)
    atomic_write_json(out / "bench.json", {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]})
    print(table)
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0
