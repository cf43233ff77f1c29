"""The ablation's units of work: (mode, seed) cells, which of them a process takes, and claims.

``--only MODE:SEED[,MODE:SEED...]`` picks the cells one process trains or evaluates, so several
processes can work on one ablation folder at once. Two guards keep that safe: each process that
works on a cell holds a claim (a lock file naming its pid, ``claim``), so two processes never train
or evaluate the same cell; and each cell's evaluation rows go to the cell's own results file
(``results_path``), so no two processes ever append to one file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["FOLLOW_UPS", "claim", "cell_name", "order_cells", "parse_only", "results_files", "results_path",
           "run_dir"]

# follow-up -> the policy of the same seed it starts from. The "+cont" controls continue their base on
# its own data at the follow-up learning rate, so a follow-up's gain over them is its own, not the lower rate's.
FOLLOW_UPS = {"hard+dpo": "hard", "hard+onpolicy": "hard", "hard+cont": "hard", "clean+cont": "clean"}


def cell_name(mode: str, seed: int) -> str:
    return f"{mode}:{seed}"


def run_dir(out: Path, mode: str, seed: int) -> Path:
    """``OUT/runs/<mode>-s<seed>``: the cell's policy_run/ and verifier_run/."""
    return Path(out) / "runs" / f"{mode.replace('+', '_')}-s{seed}"


def results_path(out: Path, mode: str, seed: int) -> Path:
    """``OUT/results-<mode>-s<seed>.jsonl``: the evaluation rows of one cell (one writer each)."""
    return Path(out) / f"results-{mode.replace('+', '_')}-s{seed}.jsonl"


def results_files(out: Path) -> list[Path]:
    """Every results file of an ablation folder: the per-cell files and an older single ``results.jsonl``."""
    out = Path(out)
    return [p for p in [out / "results.jsonl", *sorted(out.glob("results-*.jsonl"))] if p.exists()]


def parse_only(text: str, modes: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """The cells named by ``--only`` (every (mode, seed) of the config when empty), in config order."""
    every = [(m, s) for s in seeds for m in modes]
    if not str(text).strip():
        return every
    picked = set()
    for item in (t.strip() for t in str(text).split(",") if t.strip()):
        mode, sep, seed = item.rpartition(":")
        if not sep or not seed.strip().lstrip("-").isdigit():
            raise ValueError(f"--only takes MODE:SEED items (e.g. hard:0,clean:1), got {item!r}")
        cell = (mode.strip(), int(seed))
        if cell not in every:
            raise ValueError(f"--only {item!r} is not a cell of this ablation: modes {list(modes)}, seeds {list(seeds)}")
        picked.add(cell)
    return [c for c in every if c in picked]


def order_cells(cells: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Training order: per seed, ``hard`` (it calibrates) first, the follow-ups after the policies they start from."""
    return sorted(cells, key=lambda c: (c[1], c[0] in FOLLOW_UPS, c[0] != "hard"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim(lock: Path, what: str) -> Iterator[None]:
    """Hold ``lock`` (a file with this pid) while working on ``what``; refuse when a live process
    holds it. A lock left by a dead process (killed run) is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = lock.read_text().strip() if lock.exists() else ""
            holder = int(text) if text.isdigit() else None
            if holder is not None and holder != os.getpid() and _alive(holder):
                raise RuntimeError(f"{what} is being worked on by process {holder} (lock {lock}); "
                                   "give each process its own --only cells") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
        return
    raise RuntimeError(f"could not take the lock {lock} for {what}")
