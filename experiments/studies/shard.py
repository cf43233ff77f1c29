"""Scale-out across processes: which problems a rank takes, where it writes, how rank 0 merges.

Under ``torchrun --nproc_per_node W -m experiments.commands.cli eval ...`` every process reads ``RANK`` and
``WORLD_SIZE`` and takes problems ``i`` with ``i % W == rank`` (by index in the full problem list,
so the split does not depend on what is already done). Rank ``r`` appends its rows to
``results.rank{r}.jsonl``; when all ranks are done (a gloo barrier), rank 0 merges every rank file
and the previous ``results.jsonl`` into ``results.jsonl``, one row per key (``(tag, problem_id)``).

A rerun treats a key as done when *any* results file of the folder holds it, so it resumes with
any world size. Reading another rank's file while it is being appended is safe: that rank writes
only keys of its own shard, and a torn last line is skipped (``read_results``).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from experiments.studies.evaluate import evaluate, read_results
from policy.atomic import atomic_write_text

__all__ = ["RESULTS", "barrier", "done_keys", "evaluate_shard", "finish", "merge_results", "problem_order", "rank_path", "row_key", "shard_from_env",
           "take_shard"]

RESULTS = "results.jsonl"


def shard_from_env() -> tuple[int, int]:
    """``(rank, world)`` from torchrun's ``RANK`` / ``WORLD_SIZE`` (``(0, 1)`` when unset)."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE must be integers ({e})") from e
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world} is not a valid shard (0 <= RANK < WORLD_SIZE)")
    return rank, world


def rank_path(out_dir: str | os.PathLike, rank: int) -> Path:
    """Where rank ``rank`` appends its rows: ``OUT/results.rank{rank}.jsonl``."""
    return Path(out_dir) / f"results.rank{rank}.jsonl"


def row_key(row: dict) -> tuple[str, str]:
    """The identity of a row: ``(tag, problem_id)``; two rows with one key are the same work."""
    return str(row.get("tag")), str(row.get("problem_id"))


def _result_files(out_dir: Path) -> list[Path]:
    return [out_dir / RESULTS, *sorted(out_dir.glob("results.rank*.jsonl"))]


def done_keys(out_dir: str | os.PathLike) -> set[tuple[str, str]]:
    """Keys of every row in any results file of ``out_dir`` (merged or per rank)."""
    return {row_key(r) for path in _result_files(Path(out_dir)) for r in read_results(path)}


def take_shard(items: Sequence[Any], shard: tuple[int, int]) -> list[Any]:
    """Items ``i`` with ``i % world == rank``."""
    rank, world = shard
    return [x for i, x in enumerate(items) if i % world == rank]


def barrier(world: int) -> None:
    """Wait for every rank (gloo; a process group is created on first use). No-op for one process."""
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        # ranks may finish hours apart on an uneven shard: a generous timeout
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
    dist.barrier()


def merge_results(out_dir: str | os.PathLike, *, order: Callable[[dict], Any] | None = None,
                  keep: Callable[[dict], bool] | None = None) -> list[dict]:
    """Merge ``results.jsonl`` and every ``results.rank*.jsonl`` into ``results.jsonl``: one row per
    key (the first seen wins), sorted by ``order`` (default: by key), rows failing ``keep`` dropped.
    Returns the merged rows. Rank files stay (a rerun reads them as done)."""
    out_dir = Path(out_dir)
    merged: dict[tuple[str, str], dict] = {}
    for path in _result_files(out_dir):
        for r in read_results(path):
            if keep is None or keep(r):
                merged.setdefault(row_key(r), r)
    rows = sorted(merged.values(), key=order or row_key)
    atomic_write_text(out_dir / RESULTS, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def finish(out_dir: str | os.PathLike, shard: tuple[int, int], *, order: Callable[[dict], Any] | None = None,
           keep: Callable[[dict], bool] | None = None) -> list[dict] | None:
    """End of a sharded run: barrier, then rank 0 merges (returns the rows); other ranks return None."""
    rank, world = shard
    barrier(world)
    rows = merge_results(out_dir, order=order, keep=keep) if rank == 0 else None
    barrier(world)  # no rank exits (tearing down the group) before the merge is on disk
    return rows


def problem_order(problem_ids: Iterable[str]) -> Callable[[dict], tuple[str, int]]:
    """A sort key for rows: by tag, then by the problem's index in ``problem_ids``."""
    index = {pid: i for i, pid in enumerate(problem_ids)}
    return lambda r: (str(r.get("tag")), index.get(str(r.get("problem_id")), len(index)))


def evaluate_shard(problems: Sequence[Any], out_dir: str | os.PathLike, shard: tuple[int, int], *, tag: str,
                   done: set[tuple[str, str]], **evaluate_kwargs: Any) -> list[dict]:
    """``experiments.studies.evaluate.evaluate`` on this rank's unfinished problems, appending to its rank file."""
    todo = [p for p in take_shard(problems, shard) if (tag, str(p.id)) not in done]
    if not todo:
        return []
    return evaluate(todo, out=rank_path(out_dir, shard[0]), tag=tag, shard=(0, 1), **evaluate_kwargs)
