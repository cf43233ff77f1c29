"""``datasets.Dataset`` builders for problems, SFT examples and DPO pairs, and their statistics.

A problem that cannot be used (its reference solution fails the step checker, a tokenizer
refuses its text...) is skipped and counted, never a crash halfway through a dataset; the
counts travel in ``ds.info.description`` as JSON and ``dataset_stats`` reports them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Literal

import datasets
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from policy.data.dpo import DPOConfig, dpo_pairs
from policy.data.inject import InjectConfig, config_from, inject_errors, require_backtrack_id
from policy.data.problems import Problem
from policy.data.segments import Segment

__all__ = ["DATASET_KINDS", "build_dataset", "dataset_stats"]

DATASET_KINDS = ("problems", "sft", "dpo")


def build_dataset(kind: Literal["problems", "sft", "dpo"], problems: Iterable[Problem],
                  tokenizer: PreTrainedTokenizerBase | None = None, *, seed: int = 0,
                  progress: bool = True, **knobs) -> datasets.Dataset:
    """A dataset of ``kind``: ``problems`` (id, question, solution, answer), ``sft`` (the
    ``Example`` fields, from ``inject_errors``) or ``dpo`` (the ``DPOPair`` fields, from
    ``dpo_pairs``). ``knobs`` go to the injector; ``tokenizer`` (with ⟨b⟩) is needed for sft/dpo."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {', '.join(DATASET_KINDS)}")
    problems = list(problems)
    if kind == "problems":
        if knobs:
            raise ValueError(f"a problems dataset takes no knobs, got {sorted(knobs)}")
        ds = datasets.Dataset.from_list([asdict(p) for p in problems])
        return _with_info(ds, kind, Counter())
    if tokenizer is None:
        raise ValueError(f"a {kind} dataset needs a tokenizer")
    make = inject_errors if kind == "sft" else dpo_pairs
    rows, skipped = [], Counter()
    # Bad knobs or a tokenizer without ⟨b⟩ are the user's error, raised here, not per-problem skips.
    config_from(InjectConfig if kind == "sft" else DPOConfig, knobs)
    require_backtrack_id(tokenizer)
    for p in tqdm(problems, desc=f"{kind} examples", disable=not progress, leave=False):
        try:
            rows += [_row(r) for r in make(p, tokenizer, seed=seed, **knobs)]
        except ValueError as e:
            skipped[str(e).split(":", 1)[-1].strip()[:60]] += 1
    if not rows:
        raise ValueError(f"no {kind} rows from {len(problems)} problems (skipped: {dict(skipped)})")
    return _with_info(datasets.Dataset.from_list(rows), kind, skipped)


def _row(example) -> dict:
    """An ``Example`` / ``DPOPair`` as a dataset row. Their fields are ints, strings and tuples of
    ints, so a shallow dict is ``asdict``'s row without its deep copy (which was ~14 s of 8,000
    problems' examples under a profiler)."""
    return {f.name: getattr(example, f.name) for f in fields(example)}


def _with_info(ds: datasets.Dataset, kind: str, skipped: Counter) -> datasets.Dataset:
    ds.info.description = json.dumps({"kind": kind, "skipped": sum(skipped.values()), "skip_reasons": dict(skipped)})
    return ds


def _length_summary(lengths: list[int]) -> dict:
    if not lengths:
        return {}
    s = sorted(lengths)
    return {"mean": round(sum(s) / len(s), 1), "min": s[0], "p50": s[len(s) // 2],
            "p90": s[int(0.9 * (len(s) - 1))], "max": s[-1]}


def dataset_stats(ds: datasets.Dataset) -> dict:
    """Counts of a dataset from ``build_dataset``: rows, error kinds, tokens per segment, lengths."""
    info = json.loads(ds.info.description or "{}") if (ds.info.description or "").startswith("{") else {}
    stats: dict = {"rows": len(ds), "skipped": info.get("skipped", 0)}
    cols = set(ds.column_names)
    if "segments" in cols:
        per_segment = Counter()
        for seg in ds["segments"]:
            per_segment.update(seg)
        stats["examples"] = len(ds)
        stats["error_kinds"] = dict(Counter(k or "clean" for k in ds["error_kind"]).most_common())
        stats["tokens_per_segment"] = {s.name: per_segment.get(int(s), 0) for s in Segment}
        stats["length_tokens"] = _length_summary([len(x) for x in ds["input_ids"]])
    elif "chosen_ids" in cols:
        stats["pairs"] = dict(Counter(ds["kind"]))
        stats["error_kinds"] = dict(Counter(k or "none" for k in ds["error_kind"]).most_common())
        stats["prompt_tokens"] = _length_summary([len(x) for x in ds["prompt_ids"]])
        stats["chosen_tokens"] = _length_summary([len(x) for x in ds["chosen_ids"]])
        stats["rejected_tokens"] = _length_summary([len(x) for x in ds["rejected_ids"]])
    elif "question" in cols:
        stats["problems"] = len(ds)
        stats["question_chars"] = _length_summary([len(q) for q in ds["question"]])
        stats["solution_chars"] = _length_summary([len(s) for s in ds["solution"]])
        stats["steps"] = dict(sorted(Counter(s.count("<<") for s in ds["solution"]).items()))
    if info.get("skip_reasons"):
        stats["skip_reasons"] = info["skip_reasons"]
    return stats
