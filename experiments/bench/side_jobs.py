"""Benchmark: the step verifier's two label sets drawn side by side, and the labels' file layout.

Not a test. On a run's policy (a ``rewind demo`` folder, or ``tiny`` for a random one):

- ``labels``: the own-step labels of ``--problems`` problems (``collect_steps``, the demo's beam)
  and the reference steps of ``--reference`` problems (``reference_steps``) — one after the other
  in this process at its thread count (the peer, how the verifier stage drew them before), then
  side by side (``policy.workers.side_job``: the reference steps in a second process, one thread
  each, as ``rewind train-verifier`` draws them now). Both give the same labels (the side job's
  at one thread: ``tests/test_verifier_side_labels.py``).
- ``load``: ``StepData.load`` of the reference steps saved in the layout before 2026-11-30 (a list of
  per-row tensors) against the flat one (one tensor per field and the row lengths).

    python -m experiments.bench.side_jobs --run RUN [--problems 400] [--reference 4000]   # the demo's sizes

Prints and writes ``OUT/side_jobs.md`` / ``.json``; each ratio is against its peer in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.flags import add_config_flags, config_from_args
from experiments.wiring import load_run
from policy.atomic import atomic_write_json, atomic_write_text
from policy.workers import can_run_side_jobs, side_job
from search.knobs import knob
from verifier.frozen import load_frozen_policy
from verifier.splits import reference_problems, verifier_problems
from verifier.step_data import StepData, collect_steps, reference_steps

__all__ = ["SideJobsConfig", "main"]


@dataclass(frozen=True, kw_only=True)
class SideJobsConfig:
    run: str = knob("tiny", "a run folder (rewind demo) whose policy draws the labels, or 'tiny' (random)")
    problems: int = knob(400, "problems whose own steps are labelled (>= 3; the demo: 400)")
    reference: int = knob(4000, "problems whose reference steps are labelled (>= 1; the demo: 4000)")
    repeats: int = knob(1, "timed repetitions of each arm, alternating (>= 1)")
    out: str = knob("runs/side_jobs", "folder for side_jobs.md and .json")

    def __post_init__(self) -> None:
        if self.problems < 3 or self.reference < 1 or self.repeats < 1:
            raise ValueError("need --problems >= 3, --reference >= 1, --repeats >= 1")


def _policy(spec: str):
    if spec == "tiny":
        return load_frozen_policy("tiny")
    policy, _ = load_run(Path(spec))
    policy.model.eval()
    return policy


def _own(policy, problems):
    with torch.no_grad():
        return collect_steps(policy, problems, width=4, samples=4, temperature=0.4, seed=0, max_depth=12,
                             max_step_tokens=96, progress=False)


def _reference_job(spec: str, n: int, path: str) -> None:
    """The side job: load the policy, draw the reference steps, save them to ``path``."""
    ref = reference_steps(_policy(spec), reference_problems("builtin", n, 0, exclude=set()), slips=3, seed=0,
                          progress=False)
    ref.save(path, key="bench")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, SideJobsConfig)
    cfg = config_from_args(ap.parse_args(argv), SideJobsConfig)
    if not can_run_side_jobs():
        raise SystemExit("side jobs need two cores")
    policy = _policy(cfg.run)
    own_problems = verifier_problems("builtin", cfg.problems, 0)
    ref_problems = reference_problems("builtin", cfg.reference, 0, exclude=set())
    times: dict[str, list[float]] = {"one after the other": [], "side by side": [], "load (rows)": [],
                                     "load (flat)": []}
    with tempfile.TemporaryDirectory(prefix="rewind-bench-") as tmp:
        path = str(Path(tmp) / "ref.pt")
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            _own(policy, own_problems)
            ref = reference_steps(policy, ref_problems, slips=3, seed=0, progress=False)
            times["one after the other"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with side_job(_reference_job, (cfg.run, cfg.reference, path)) as future:
                _own(policy, own_problems)
            future.result()
            StepData.load(path, key="bench")
            times["side by side"].append(time.perf_counter() - t0)
        rows_path = Path(tmp) / "rows.pt"
        torch.save({"key": "k", **{k: getattr(ref, k) for k in ref.__dataclass_fields__ if k != "views"},
                    "views": [(v.hidden.half(), v.logprobs, v.entropies, v.depth, list(v.ids)) for v in ref.views]},
                   rows_path)
        ref.save(Path(tmp) / "flat.pt", key="k")
        for _ in range(cfg.repeats):
            for name, p in (("load (rows)", rows_path), ("load (flat)", Path(tmp) / "flat.pt")):
                t0 = time.perf_counter()
                assert StepData.load(p, key="k") is not None
                times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    lines = [f"# Side jobs and the labels' file layout ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads here)", "",
             f"run `{cfg.run}`; own steps of {cfg.problems} problems, reference steps of {cfg.reference} problems "
             f"({len(ref)} rows); median of {cfg.repeats}", "",
             "| what | seconds | ratio vs peer |", "|---|---|---|",
             f"| labels, one after the other (peer) | {med['one after the other']:.1f} | 1.00 |",
             f"| labels, side by side (reference steps in a side job, one thread each; its file loaded) | "
             f"{med['side by side']:.1f} | **{med['one after the other'] / med['side by side']:.2f}×** |",
             f"| load, per-row layout (peer) | {med['load (rows)']:.2f} | 1.00 |",
             f"| load, flat layout | {med['load (flat)']:.2f} | **{med['load (rows)'] / med['load (flat)']:.1f}×** |"]
    text = "\n".join(lines) + "\n"
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "side_jobs.md", text)
    atomic_write_json(out / "side_jobs.json", {"config": dataclasses.asdict(cfg), "times": times, "rows": len(ref)})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
