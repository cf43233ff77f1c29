"""``rewind bench``: Rewind's speed claims as ratios against their peers, measured side by side.

Writes ``OUT/bench.md`` (the table) and ``OUT/bench.json`` (rows with the raw numbers behind
them, and the machine). See ``experiments/bench.py`` for what each row measures.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from experiments.bench.suite import GROUPS, BenchConfig, Sizes, run_bench, to_markdown
from policy.atomic import atomic_write_json, atomic_write_text

__all__ = ["add_arguments", "run"]

_NAMES = {name: gid for gid, name in GROUPS.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true", help="every row tiny and fast (seconds; what the tests run)")
    p.add_argument("--model", default="tiny", help="'tiny' (the built-in policy) or a policy name/folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda when present")
    p.add_argument("--out", default="runs/bench", help="folder for bench.md and bench.json (default runs/bench)")
    p.add_argument("--only", default="", help="comma-separated rows to run, by number or name: "
                   + ", ".join(f"{k}={v}" for k, v in GROUPS.items()) + " (default: all)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement (default 5; smoke 1)")
    p.add_argument("--seed", type=int, default=0, help="model init and problem seed")


def parse_only(text: str) -> tuple[str, ...]:
    """'1,kv,6' -> ('1', '2', '6'); empty -> every group."""
    if not text.strip():
        return tuple(GROUPS)
    out = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        gid = part if part in GROUPS else _NAMES.get(part)
        if gid is None:
            raise ValueError(f"unknown benchmark row {part!r}; rows are "
                             + ", ".join(f"{k} ({v})" for k, v in GROUPS.items()))
        if gid not in out:
            out.append(gid)
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    sizes = Sizes.smoke() if args.smoke else Sizes.full()
    if args.reps is not None:
        sizes = dataclasses.replace(sizes, reps=args.reps)
    cfg = BenchConfig(model=args.model, device=args.device, sizes=sizes, only=parse_only(args.only), seed=args.seed)
    rows, meta = run_bench(cfg)
    meta["command"] = "rewind bench " + " ".join(
        x for x in (("--smoke" if args.smoke else ""), f"--model {args.model}", f"--device {args.device}",
                    f"--only {args.only}" if args.only else "", f"--reps {args.reps}" if args.reps else "") if x)
    table = to_markdown(rows, meta)
    out = Path(args.out)
    atomic_write_text(out / "bench.md", table)
    atomic_write_json(out / "bench.json", {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]})
    print(table)
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0
