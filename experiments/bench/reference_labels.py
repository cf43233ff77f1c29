"""The step verifier's reference labels: one tree forward per problem against one forward per step.

``python -m experiments.bench.reference_labels --run RUN [--problems 400] [--reps 3]`` builds the
reference steps of ``--problems`` problems (the correct line and 3 slipped versions of every
one-annotation line, the demo's recipe) with the frozen policy of ``RUN``: ``reference_steps``
(``_tree_views``: the reference solution as the trunk, each slip a branch off its prefix) against the
same rows through ``_forced_views`` (prefix + step, padded, one row per step; the way it was done
before 2026-11-30). Times alternate (``timing.paired``); it prints the medians, their ratio, the
forward tokens of each, and the largest difference between the two views (they must agree).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from experiments.bench.timing import machine, paired
from experiments.flags import add_config_flags, config_from_args
from experiments.wiring import load_run
from search.knobs import knob
from verifier.splits import reference_problems
from verifier.step_data import _forced_views, reference_steps


@dataclass(frozen=True, kw_only=True)
class ReferenceLabelsBench:
    run: str = knob(None, "a run folder with a policy (rewind demo writes one)")
    problems: int = knob(400, "reference problems (>= 1)")
    reps: int = knob(3, "timed repetitions of each side (>= 1)")

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("--run is required")
        if self.problems < 1 or self.reps < 1:
            raise ValueError(f"--problems and --reps must be >= 1, got {self.problems} and {self.reps}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, ReferenceLabelsBench)
    args = config_from_args(ap.parse_args(argv), ReferenceLabelsBench)
    policy, _ = load_run(args.run, with_verifier=False)
    policy.model.eval()
    problems = reference_problems("builtin", args.problems, 0, exclude=set())
    data = reference_steps(policy, problems, slips=3, seed=0, progress=False)
    rows = [(data.prefix_ids[i], data.views[i].ids) for i in range(len(data))]
    res = paired(lambda: reference_steps(policy, problems, slips=3, seed=0, progress=False),
                 lambda: _forced_views(policy, rows, batch_size=64, progress=False, desc=""),
                 reps=args.reps, warmup=1, device=torch.device("cpu"))
    diff = max(float((v.hidden - h).abs().max()) for v, (h, _, _) in zip(res["ours_out"].views, res["peer_out"]))
    trunks = sum(len(p) for p in {tuple(data.prefix_ids[i]) + tuple(data.views[i].ids) for i in range(len(data))
                                  if data.labels[i] == 0})  # an upper bound: prefixes overlap within a problem
    m = machine(torch.device("cpu"))
    print(f"{m['date']}; {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads; torch {m['torch']}")
    print(f"{args.problems} problems, {len(data)} steps ({sum(data.labels)} slipped)")
    print(f"tree forward (one per problem): {res['ours_s']:.1f} s; per-step forward: {res['peer_s']:.1f} s; "
          f"ratio {res['ratio']:.2f}x (median of {args.reps})")
    print(f"per-step forward tokens: {sum(len(p) + len(s) for p, s in rows):,}; "
          f"correct lines with their prefixes: {trunks:,}; largest |hidden difference|: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
