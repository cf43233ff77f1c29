"""``rewind data``: build a problems / SFT / DPO dataset, save it with ``save_to_disk`` and print
its statistics. The injector's flags are generated from ``InjectConfig`` / ``DPOConfig``.

    rewind data --kind sft --task builtin --split train --n 2000 --out runs/data/sft-train
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from policy.atomic import atomic_dir

__all__ = ["add_arguments", "run"]

_SKIP_FIELDS = {"kinds"}  # given as a comma list, below


def _knob_fields():
    from policy.data import DPOConfig

    return [f for f in dataclasses.fields(DPOConfig) if f.name not in _SKIP_FIELDS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=("problems", "sft", "dpo"), default="sft", help="what to build")
    parser.add_argument("--task", choices=("builtin", "gsm8k"), default="builtin", help="problem source")
    parser.add_argument("--split", default="train",
                        help="builtin: train/validation/test; gsm8k: train/test or a JSONL path")
    parser.add_argument("--n", type=int, default=None, help="number of problems (default: builtin 1000, gsm8k all)")
    parser.add_argument("--seed", type=int, default=0, help="generator and injector seed")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--tokenizer", default="char",
                        help="'char' (the built-in char tokenizer) or a tokenizer folder / hub name")
    parser.add_argument("--kinds", default=None, help="comma list of error kinds (default: all)")
    hints = typing.get_type_hints(_dpo_config())
    for f in _knob_fields():
        typ = hints[f.name]
        choices = typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else None
        conv = {int: int, float: float}.get(typ, str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=conv, choices=choices,
                            default=None, help=f"injector knob (default {f.default!r})")


def _dpo_config():
    from policy.data import DPOConfig

    return DPOConfig


def _tokenizer(name: str):
    from policy import add_backtrack_token, char_tokenizer

    if name == "char":
        tok = char_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    add_backtrack_token(None, tok)
    return tok


def _problems(args):
    from policy.data import generate_problems, load_gsm8k

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.task == "builtin":
        return generate_problems(args.n or 1000, seed=args.seed, split=args.split)
    problems = load_gsm8k(args.split)
    return problems[: args.n] if args.n else problems


def run(args: argparse.Namespace) -> int:
    from policy.data import build_dataset, dataset_stats

    problems = _problems(args)
    knobs = {f.name: getattr(args, f.name) for f in _knob_fields() if getattr(args, f.name) is not None}
    if args.kinds:
        knobs["kinds"] = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if args.kind == "sft":  # DPO-only knobs
        for name in ("horizon", "no_backtrack_share"):
            knobs.pop(name, None)
    if args.kind == "problems":
        if knobs:
            raise ValueError(f"--kind problems takes no injector flags (got {', '.join(sorted(knobs))})")
        ds = build_dataset("problems", problems)
    else:
        ds = build_dataset(args.kind, problems, _tokenizer(args.tokenizer), seed=args.seed, **knobs)
    with atomic_dir(args.out) as tmp:
        ds.save_to_disk(str(tmp))
    stats = dataset_stats(ds)
    print(f"wrote {len(ds)} rows to {args.out}")
    print(json.dumps(stats, indent=2))
    return 0
