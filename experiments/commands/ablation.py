"""``rewind ablation``: training modes × inference methods at matched token budgets, with 95% CIs
and McNemar tests vs the clean baseline; also verifier vs the policy's P(⟨b⟩) as pruning signal.

It trains every policy (and its verifier) itself, into ``OUT/runs/<mode>-s<seed>/``, each to its
plateau under one rule (eval loss every --eval-steps; stop after --plateau-patience evals without a
--plateau-delta relative gain; --max-steps caps it), reusing finished ones; then evaluates every
cell into ``OUT/results-<mode>-s<seed>.jsonl`` (resumable) and writes ``OUT/ablation.md`` (accuracy,
budgets, training steps per policy, per-seed spread, the ⟨b⟩ mechanism) and ``OUT/ablation.png``.
Every flag is a field of ``experiments.studies.ablation.AblationConfig``.

  rewind ablation --out runs/ablation                 # everything, in one process
  rewind ablation --out /tmp/ablation-smoke --smoke   # the pipeline end to end in 2-3 minutes

In parallel: --stage {train,eval,report} and --only MODE:SEED,... split the work into processes
(give every process the same other flags; run them with OMP_NUM_THREADS=1, one per core):

  rewind ablation --out X --stage train --only hard:0,hard+dpo:0,hard+onpolicy:0   # also calibrates
  rewind ablation --out X --stage train --only clean:0,naive:0,masked:0            # at the same time
  ... the same for seeds 1 and 2, then
  rewind ablation --out X --stage eval --only hard:0,clean:0     # any split of the trained cells
  rewind ablation --out X --stage report                         # the tables, nothing trained or run

A follow-up (hard+dpo, hard+onpolicy) waits for the hard policy of its seed: it is refused until
that is trained, unless hard:SEED is in the same --only (then it trains first).

Time on 2 CPU cores (single-threaded processes, measured 2026-11-29/30 with both cores busy): a policy
trains at ~1.0-2.0 s per optimiser step of 32 problems and the plateau rule stopped the first ones at
1,100 steps (13-19 minutes); a verifier (400 label problems, 2,000 reference problems, 8 epochs) takes
~8-12 minutes. One seed's 6 cells train in about 3-4 hours in one process. Evaluating one cell on 500
problems took 10 minutes (clean: 5 methods) to 15 minutes (hard: 7 methods, with the P(<b>) cells):
search runs at ~5,000 generated tokens per CPU-second on the tiny policy. All 18 cells: ~10-12 hours of
training plus ~4 hours of evaluation on one core, about half that on two parallel processes; far less
on a GPU. A rerun resumes where it stopped (finished policies, verifiers and problems are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.ablation import AblationConfig, run_ablation

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (AblationConfig,)  # every flag is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_flags(parser, AblationConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, AblationConfig)
    print(run_ablation(config))
    if config.stage in ("all", "report"):
        print(f"rewind ablation: wrote {Path(config.out) / 'ablation.md'} and {Path(config.out) / 'ablation.png'}")
    return 0
