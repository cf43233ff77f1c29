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

  rewind ablation --out X --stage train --only hard:0,hard+dpo:0,hard+onpolicy:0,hard+cont:0  # also calibrates
  rewind ablation --out X --stage train --only clean:0,naive:0,masked:0,clean+cont:0          # at the same time
  ... the same for seeds 1 and 2, then
  rewind ablation --out X --stage eval --only hard:0,clean:0     # any split of the trained cells
  rewind ablation --out X --stage report                         # the tables, nothing trained or run

A follow-up (hard+dpo, hard+onpolicy, and the controls hard+cont / clean+cont, which continue hard /
clean on their own data at the on-policy round's lower learning rate) waits for the policy of its
seed it starts from: it is refused until that is trained, unless it is in the same --only (then it
trains first).

Time on 2 CPU cores (single-threaded processes, measured 2026-11-29/30 with both cores busy): a policy
trains at ~1.0-2.0 s per optimiser step of 32 problems and the plateau rule stopped the first ones at
1,100 steps (13-19 minutes); a verifier (400 label problems, 2,000 reference problems, 8 epochs) takes
~8-12 minutes. One seed's 6 cells train in about 3-4 hours in one process. Evaluating one cell on 500
problems took 10 minutes (clean: 5 methods) to 15 minutes (hard: 7 methods, with the P(<b>) cells):
search runs at ~5,000 generated tokens per CPU-second on the tiny policy. All 18 cells: ~10-12 hours of
training plus ~4 hours of evaluation on one core, about half that on two parallel processes; far less
on a GPU. A rerun resumes where it stopped (finished policies, verifiers and problems are reused).

A pretrained model with LoRA (--model FOLDER_OR_NAME --lora-r R; --lr, --train-batch-size,
--num-eval and --verifier-knobs size it): every mode trains adapters on the same base, each policy
is merged into policy_run/merged after training, and the verifier, the follow-ups, the calibration
and the evaluation use the merged model. SmolLM2-135M, naive/masked/hard on the built-in task, in
about an hour on 2 idle CPU cores (X is every flag but --stage/--only; one process per core):

  X="--out runs/ablation17-smollm2 --model $HOME/.cache/rewind/smollm2/fp32 --lora-r 16 --lr 3e-4
     --modes naive,masked,hard --seeds 0 --max-steps 200 --train-batch-size 4 --train-problems 800
     --num-eval 32 --verifier-problems 48 --verifier-reference-problems 100
     --verifier-knobs beam_width=2,beam_samples=2,max_depth=6,max_step_tokens=32,reference_slips=1
     --n 200 --inference greedy-soft,greedy-rewind,beam+verifier --signal-modes= --budget 4
     --calibration-problems 8 --max-new-tokens 96 --search-knobs max_depth=6,max_step_tokens=32"
  export OMP_NUM_THREADS=1
  rewind ablation $X --stage all --only hard:0                        # ~30 min, calibrates too
  rewind ablation $X --stage train --only naive:0,masked:0 && \\
      rewind ablation $X --stage eval --only naive:0,masked:0          # at the same time: ~55 min
  rewind ablation $X --stage report

Measured single-threaded, with other jobs on both cores (CPU time of the process; an idle core
runs about that fast): one LoRA step of 4 problems (~86 tokens each) 3.2-3.8 s; a whole cell at
--max-steps 150 --n 100 (training 9.5 min, merge, verifier ~3 min, calibration ~1 min) 14 min,
and its 300 evaluations (greedy 45 tokens, beam+verifier 176 tokens a problem) 6 min. At 200 steps
and 200 problems a cell is ~16-17 min of training and ~12 min of evaluation: ~88 core-minutes in
all. One process (`rewind ablation $X`, torch on both cores) takes longer than the split.
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
