"""``rewind data``: build a problems / SFT / DPO dataset, save it with ``save_to_disk`` and print
its statistics. Every flag is a field of ``DataConfig`` (what to build) or of
``policy.data.DPOConfig`` (the injector's knobs; ``InjectConfig``'s and DPO's own).

    rewind data --kind sft --task builtin --split train --n 2000 --out runs/data/sft-train
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

from transformers import AutoTokenizer

from experiments.flags import add_config_flags, config_fields
from policy import add_backtrack_token, char_tokenizer
from policy.atomic import atomic_dir
from policy.data import DPOConfig, InjectConfig, build_dataset, dataset_stats, generate_problems, load_gsm8k
from search.knobs import knob

__all__ = ["CONFIGS", "DataConfig", "add_arguments", "run"]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What ``rewind data`` builds, from what, and where it goes."""

    kind: Literal["problems", "sft", "dpo"] = knob("sft", "what to build")
    task: Literal["builtin", "gsm8k"] = knob("builtin", "problem source")
    split: str = knob("train", "builtin: train/validation/test; gsm8k: train/test or a JSONL path")
    n: int | None = knob(None, "number of problems, >= 1 (None: builtin 1000, gsm8k all)")
    seed: int = knob(0, "generator and injector seed")
    out: str = knob(None, "output folder (written atomically)")
    tokenizer: str = knob("char", "'char' (the built-in char tokenizer) or a tokenizer folder / hub name")

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")


CONFIGS = (DataConfig, DPOConfig)  # every flag is a field of these
_DPO_ONLY = {f.name for f in config_fields(DPOConfig)} - {f.name for f in config_fields(InjectConfig)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, DataConfig)
    add_config_flags(parser.add_argument_group("injector knobs (sft, dpo)"), DPOConfig, unset=True, owner="DPOConfig")


def _tokenizer(name: str):
    tok = char_tokenizer() if name == "char" else AutoTokenizer.from_pretrained(name)
    add_backtrack_token(None, tok)
    return tok


def _problems(cfg: DataConfig) -> list:
    if cfg.task == "builtin":
        return generate_problems(cfg.n or 1000, seed=cfg.seed, split=cfg.split)
    problems = load_gsm8k(cfg.split)
    return problems[: cfg.n] if cfg.n else problems


def run(args: argparse.Namespace) -> int:
    cfg = DataConfig(**{f.name: getattr(args, f.name) for f in config_fields(DataConfig)})
    knobs = {f.name: getattr(args, f.name) for f in config_fields(DPOConfig) if getattr(args, f.name) is not None}
    if "kinds" in knobs:
        knobs["kinds"] = tuple(knobs["kinds"])
    if cfg.kind == "sft":  # DPO-only knobs
        knobs = {k: v for k, v in knobs.items() if k not in _DPO_ONLY}
    problems = _problems(cfg)
    if cfg.kind == "problems":
        if knobs:
            raise ValueError(f"--kind problems takes no injector flags (got {', '.join(sorted(knobs))})")
        ds = build_dataset("problems", problems)
    else:
        ds = build_dataset(cfg.kind, problems, _tokenizer(cfg.tokenizer), seed=cfg.seed, **knobs)
    with atomic_dir(cfg.out) as tmp:
        ds.save_to_disk(str(tmp))
    print(f"wrote {len(ds)} rows to {cfg.out}")
    print(json.dumps(dataset_stats(ds), indent=2))
    return 0
