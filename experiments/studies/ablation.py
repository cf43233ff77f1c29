"""The ablation: which training fix matters, under which inference method?

Training modes {clean, naive, masked, hard, hard+dpo, hard+onpolicy, and the controls hard+cont,
clean+cont} × inference {greedy soft
(``decode-soft``), greedy rewind (``decode``), best-of-N, beam + verifier, MCTS + verifier}, over
several training seeds, on N held-out built-in problems; plus beam/MCTS pruned by the policy's own
P(⟨b⟩) instead of the verifier. The sampling strategies run at matched token budgets: best-of-N's
``budget`` samples set the target mean tokens per problem, and beam width / MCTS simulations are
calibrated once (on validation problems, the first seed's ``hard`` policy) to hit it; the table
reports the budgets achieved.

Training: one stopping rule for every mode (``policy.plateau``): a policy trains until its held-out
eval loss (every ``eval_steps``) has gone ``plateau_patience`` evals in a row without improving by
``plateau_delta`` (relative), at most ``max_steps`` steps, under a constant learning rate after
warm-up (a cosine decay over the cap would make where a mode stops depend on the schedule). The
follow-ups (hard+dpo, hard+onpolicy) continue the trained ``hard`` policy of their seed under the
same rule and cap, at a lower learning rate. A lower rate alone lowers the loss of a policy that
plateaued at a constant rate, so two controls continue ``hard`` and ``clean`` on their own data at
the on-policy round's rate, with nothing harvested (hard+cont, clean+cont): a follow-up's gain over
hard+cont is its own. The comparison is "each mode at its own plateau", not
"equal steps": the report's training table gives every policy's steps, tokens and best eval loss.

Stages, each reused when finished (a rerun resumes): for every (mode, seed) cell a policy
(``runs/<mode>-s<seed>/policy_run``) and its verifier (``.../verifier_run``); the calibration
(``budgets.json``, made right after the calibration cell trains); every evaluation (rows in the
cell's own ``results-<mode>-s<seed>.jsonl``, keyed by tag). Every row carries the config hash; a
rerun with another config into the same folder is refused. The tables, tests and plot:
``ablation_report``.

Parallel recipe (``--stage`` and ``--only``; every process gets the same other flags)::

    rewind ablation --out X --stage train --only hard:0,hard+dpo:0,hard+onpolicy:0,hard+cont:0  # calibrates too
    rewind ablation --out X --stage train --only clean:0,naive:0,masked:0,clean+cont:0
    rewind ablation --out X --stage train --only hard:1,hard+dpo:1,hard+onpolicy:1 ...  # one per core
    rewind ablation --out X --stage eval --only hard:0        # any split of the cells, once trained
    rewind ablation --out X --stage report                    # the tables from every results file

A follow-up cell is refused until the policy it starts from (``hard``; ``clean`` for clean+cont)
is trained for its seed (or is in the same ``--only``, which trains it first); a cell claimed by a live process is refused by any other.
Time on 2 CPU cores, one single-threaded process per core: see ``experiments.commands.ablation``.

A pretrained model with LoRA (``--model FOLDER_OR_NAME --lora-r R``; default: the built-in tiny
policy from scratch): every mode trains LoRA adapters on the same base (``policy.lora``: the ⟨b⟩
embedding row trains too), and each policy is merged into ``policy_run/merged`` right after it
trains; its verifier, the follow-ups (new adapters on the merged ``hard`` policy: an adapter on an
adapter would name the bare base as its own), the calibration and the evaluation all use that
merged model. ``--lr`` is the base learning rate (default: TrainConfig's for the model: 3e-3 tiny,
1e-4 LoRA, 1e-5 all weights); hard+dpo trains at 1/6 of it and hard+onpolicy at 1/3
(``FOLLOW_UP_LR_SHARE``: 5e-4 and 1e-3 for the tiny policy, as before). ``--train-batch-size``,
``--num-eval`` and ``--verifier-knobs`` (e.g. a narrower label beam) size it for a CPU. SmolLM2-135M
with LoRA on the built-in task in about an hour on 2 CPU cores (measured numbers and the split into
two processes: ``experiments.commands.ablation``)::

    rewind ablation --out runs/ablation17-smollm2 --model $HOME/.cache/rewind/smollm2/fp32 --lora-r 16 \\
        --lr 3e-4 --modes naive,masked,hard --seeds 0 --max-steps 200 --train-batch-size 4 \\
        --train-problems 800 --num-eval 32 --verifier-problems 48 --verifier-reference-problems 100 \\
        --verifier-knobs beam_width=2,beam_samples=2,max_depth=6,max_step_tokens=32,reference_slips=1 \\
        --n 200 --inference greedy-soft,greedy-rewind,beam+verifier --signal-modes= --budget 4 \\
        --calibration-problems 8 --max-new-tokens 96 --search-knobs max_depth=6,max_step_tokens=32

(about 88 core-minutes: split over two single-threaded processes as the command's help shows.)

The policy knobs (``model``, ``lora_r``, ``lr``, ``train_batch_size``, ``num_eval``,
``verifier_knobs``) enter the config hash only when set (``HASHED_WHEN_SET``): an ablation run
before they existed keeps its hash, its finished cells and its results.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import search
from experiments.inputs import check_config, config_hash, load_problems
from experiments.studies.ablation_cells import (
    FOLLOW_UPS,
    cell_name,
    claim,
    order_cells,
    parse_only,
    results_path,
    run_dir,
)
from experiments.studies.ablation_report import write_report
from experiments.studies.evaluate import evaluate
from experiments.wiring import load
from policy.atomic import atomic_write_json
from policy.data import generate_problems
from policy.dpo import train_dpo
from policy.model import merge_lora
from policy.sft import last_complete_checkpoint, train_sft
from policy.train_config import LR_FULL, LR_LORA, LR_TINY, TrainConfig
from search.config import parse_knobs
from search.knobs import knob
from verifier.config import VerifierTrainConfig
from verifier.train import train_verifier

__all__ = ["AblationConfig", "INFERENCE", "MODES", "STAGES", "calibrate_budgets", "run_ablation", "train_stage"]

MODES = ("clean", "naive", "masked", "hard", "hard+dpo", "hard+onpolicy", "hard+cont", "clean+cont")
STAGES = ("all", "train", "eval", "report")
# inference label -> (evaluate method, pruning signal)
INFERENCE = {"greedy-soft": ("decode-soft", None), "greedy-rewind": ("decode", None),
             "best-of-n": ("best_of_n", "verifier"), "beam+verifier": ("beam", "verifier"),
             "mcts+verifier": ("mcts", "verifier"), "beam+P(b)": ("beam", "policy"), "mcts+P(b)": ("mcts", "policy")}
SMOKE = dict(n=8, seeds="0", max_steps=3, eval_steps=1, plateau_patience=1, train_problems=48, harvest_problems=8,
             verifier_problems=24, verifier_epochs=3, verifier_reference_problems=24, calibration_problems=3,
             budget=2, beam_samples=2, max_new_tokens=48, search_knobs="max_depth=3,max_step_tokens=24")
# which process runs which cells changes no result
# "out" locates a run: a copied folder still reports; "modes" and "seeds" choose cells, and every row names its
# mode and seed: adding a mode or a seed to a finished ablation keeps its results
NOT_HASHED = ("batch_size", "stage", "only", "out", "modes", "seeds")
# the follow-ups continue the hard policy at these shares of the base learning rate (--lr, or the model's default):
# 1/6 and 1/3, i.e. 5e-4 and 1e-3 for the tiny policy's 3e-3 (DPO wants a small rate; Rafailov et al. 2023)
FOLLOW_UP_LR_SHARE = {"hard+dpo": 1 / 6, "hard+onpolicy": 1 / 3, "hard+cont": 1 / 3, "clean+cont": 1 / 3}
MERGED = "merged"  # policy_run/merged: a LoRA policy's adapters merged into its base (what later stages load)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass(frozen=True, kw_only=True)
class AblationConfig:
    """The whole ablation; ``--smoke`` shrinks it to a 2-3 minute run (see ``SMOKE``)."""

    out: str = knob(None, "ablation folder: runs/, budgets.json, config.json, results-*.jsonl, ablation.md, ablation.png")
    modes: str = knob(",".join(MODES), f"comma-separated training modes from {', '.join(MODES)}; 'clean' is the baseline")
    inference: str = knob(",".join(k for k in INFERENCE if "P(b)" not in k),
                          f"comma-separated inference methods from {', '.join(INFERENCE)}")
    signal_modes: str = knob("hard", "modes that also run beam/MCTS pruned by the policy's own P(⟨b⟩) ('' for none)")
    n: int = knob(500, "held-out built-in test problems (>= 1)")
    seeds: str = knob("0,1,2", "training seeds, comma-separated (each trains every mode anew)")
    threshold: float | None = knob(None, "pruning threshold in [0, 1] for every search cell (default: each "
                                   "verifier's calibrated threshold; 0.5 for cells pruned by P(⟨b⟩))")
    budget: int = knob(8, "best-of-N's N; beam width and MCTS simulations are calibrated to its mean tokens (>= 1)")
    beam_samples: int = knob(4, "children per beam (M); the width is calibrated (>= 1)")
    mcts_children: int = knob(4, "children per MCTS expansion (K); simulations are calibrated (>= 1)")
    calibration_problems: int = knob(16, "validation problems used to match the token budgets (>= 1)")
    search_knobs: str = knob("", "extra knobs for every search method, KEY=VALUE,... (e.g. max_depth=16)")
    max_new_tokens: int = knob(320, "decoders: longest generation in tokens (>= 1)")
    train_problems: int = knob(8000, "training problems per policy (TrainConfig.num_problems)")
    max_steps: int = knob(1500, "cap on optimiser steps per policy, the plateau rule usually stops first "
                          "(-1: TrainConfig's num_epochs)")
    eval_steps: int = knob(50, "eval loss every N steps: the plateau rule's clock (>= 1)")
    plateau_patience: int = knob(3, "stop a policy after this many evals in a row without a relative eval-loss "
                                 "improvement of --plateau-delta; one rule for every mode (0: off, train to the cap)")
    plateau_delta: float = knob(0.01, "relative eval-loss improvement that resets the plateau count, in [0, 1)")
    plateau_keep_best: bool = knob(False, "save each policy with the weights of its lowest eval loss, not the last "
                                   "(ablation17 ran without: its hard seed 2 was saved after a loss spike)")
    lr_scheduler: str = knob("constant_with_warmup", "learning-rate schedule of every policy (constant: where the "
                             "plateau rule stops does not depend on a decay over the cap)")
    model: str = knob("tiny", "the policy every mode trains: 'tiny' (the built-in char-level policy, from scratch) "
                      "or a pretrained model: a save_pretrained folder or hub name (e.g. ~/.cache/rewind/smollm2/fp32)")
    lora_r: int = knob(0, "LoRA rank for a pretrained --model (0: train all weights); a LoRA policy is merged "
                       "into policy_run/merged right after training, and later stages load that")
    lr: float | None = knob(None, "peak learning rate of clean/naive/masked/hard (default: the model's, 3e-3 tiny, "
                            "1e-4 LoRA, 1e-5 full); hard+dpo trains at 1/6 of it, hard+onpolicy at 1/3")
    train_batch_size: int | None = knob(None, "examples per optimiser step of every policy (default: "
                                        "TrainConfig's 32; 8 with --smoke)")
    num_eval: int | None = knob(None, "held-out problems of each policy's eval loss, the plateau rule's signal "
                                "(default: TrainConfig's 128; 8 with --smoke)")
    harvest_problems: int = knob(256, "hard+onpolicy: problems the hard policy is sampled on")
    verifier_problems: int = knob(200, "problems the verifier labels come from (>= 3)")
    verifier_labels: str = knob("injected", "verifier label source: injected, rollouts, mc or mix")
    verifier_epochs: int = knob(8, "most epochs of each cell's step verifier (>= 1)")
    verifier_reference_problems: int = knob(2000, "problems whose reference solutions add right/slipped sibling "
                                            "steps to each verifier's training (>= 0)")
    verifier_knobs: str = knob("", "more VerifierTrainConfig fields for every cell's verifier, KEY=VALUE,... (e.g. "
                               "beam_width=2,max_depth=8,max_step_tokens=32: cheaper labels on a pretrained model)")
    batch_size: int = knob(8, "problems solved together (>= 1)")
    stage: Literal["all", "train", "eval", "report"] = knob(
        "all", "what this process does: train (policies, verifiers, the calibration), eval (the trained cells), "
        "report (the tables from every results file), or all three")
    only: str = knob("", "MODE:SEED[,MODE:SEED...]: the cells this process trains / evaluates (default: every "
                     "cell); disjoint --only sets run in parallel processes")
    smoke: bool = knob(False, "tiny smoke run (8 problems, 1 seed, 3 steps): checks the pipeline in 2-3 minutes",
                     flag=True)

    # added after ablations ran: in the hash only when set, so a default config keeps its hash and results
    HASHED_WHEN_SET: ClassVar[tuple[str, ...]] = ("model", "lora_r", "lr", "train_batch_size", "num_eval",
                                                  "verifier_knobs", "plateau_keep_best")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out (the ablation folder) is required")
        bad = [m for m in _csv(self.modes) if m not in MODES]
        if bad or not _csv(self.modes):
            raise ValueError(f"unknown training mode(s) {bad}; choose from {MODES}")
        for mode in _csv(self.modes):
            if mode in FOLLOW_UPS and FOLLOW_UPS[mode] not in _csv(self.modes):
                raise ValueError(f"{mode} starts from the {FOLLOW_UPS[mode]} policy: include "
                                 f"'{FOLLOW_UPS[mode]}' in --modes")
        bad = [m for m in _csv(self.inference) if m not in INFERENCE]
        if bad or not _csv(self.inference):
            raise ValueError(f"unknown inference method(s) {bad}; choose from {tuple(INFERENCE)}")
        if any(m not in _csv(self.modes) for m in _csv(self.signal_modes)):
            raise ValueError(f"--signal-modes {self.signal_modes!r} must be a subset of --modes")
        try:
            [int(s) for s in _csv(self.seeds)]
        except ValueError as e:
            raise ValueError(f"--seeds must be comma-separated integers, got {self.seeds!r}") from e
        if not _csv(self.seeds):
            raise ValueError("--seeds must name at least one seed")
        self._check_numbers()
        self._check_policy()
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}")
        self.selected  # noqa: B018 - parses --only: a bad cell fails here, before any work

    def _check_numbers(self) -> None:
        for name in ("n", "budget", "beam_samples", "mcts_children", "calibration_problems", "max_new_tokens",
                     "train_problems", "harvest_problems", "batch_size", "eval_steps", "verifier_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.verifier_problems < 3:
            raise ValueError(f"verifier_problems must be >= 3, got {self.verifier_problems}")
        if self.verifier_reference_problems < 0 or self.plateau_patience < 0:
            raise ValueError("verifier_reference_problems and plateau_patience must be >= 0, got "
                             f"{self.verifier_reference_problems} and {self.plateau_patience}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (TrainConfig's num_epochs) or >= 1, got {self.max_steps}")
        if not 0.0 <= self.plateau_delta < 1.0:
            raise ValueError(f"plateau_delta must be a relative improvement in [0, 1), got {self.plateau_delta}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def _check_policy(self) -> None:
        if not str(self.model).strip():
            raise ValueError("--model is empty: give 'tiny' or a pretrained model (a folder or hub name)")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0 (0: no LoRA), got {self.lora_r}")
        if self.lora_r and self.model == "tiny":
            raise ValueError("--lora-r needs a pretrained --model (e.g. --model ~/.cache/rewind/smollm2/fp32); "
                             "the built-in tiny policy trains from scratch")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("train_batch_size", "num_eval"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for the default), got {getattr(self, name)}")
        verifier_knobs(self.verifier_knobs)

    def effective(self) -> AblationConfig:
        """The config actually run: ``SMOKE`` applied in smoke mode."""
        return dataclasses.replace(self, **SMOKE) if self.smoke else self

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in _csv(self.seeds)]

    @property
    def selected(self) -> list[tuple[str, int]]:
        """The (mode, seed) cells of this process (``--only``; every cell when empty)."""
        return parse_only(self.only, _csv(self.modes), self.seed_list)

    def inference_of(self, mode: str) -> list[str]:
        """The inference methods evaluated on ``mode``'s policies."""
        signal = [k for k in INFERENCE if "P(b)" in k] if mode in _csv(self.signal_modes) else []
        return _csv(self.inference) + signal

    @property
    def cells(self) -> list[tuple[str, int, str]]:
        """Every (mode, seed, inference) evaluated, in order."""
        return [(m, s, i) for s in self.seed_list for m in _csv(self.modes) for i in self.inference_of(m)]

    @property
    def calibration_cell(self) -> tuple[str, int]:
        """The cell whose policy and verifier the token budgets are calibrated on."""
        modes = _csv(self.modes)
        return ("hard" if "hard" in modes else modes[0]), self.seed_list[0]


def stage_policy(cfg: AblationConfig, pol_run: Path) -> Path:
    """The policy that later stages (verifier, follow-ups, calibration, evaluation) use: under LoRA the
    merged full model ``policy_run/merged`` (written right after training), else the run itself.

    (Loading an adapter run merges it on every load; merging once, into a folder, spares every later
    stage that merge and gives the follow-ups' new adapters a base that holds the SFT adapter, as
    ``policy.dpo.init_policy`` does for ``rewind train-policy --mode dpo --init LORA_RUN --lora-r R``.)"""
    return pol_run / MERGED if cfg.lora_r else pol_run


def base_lr(cfg: AblationConfig) -> float:
    """The learning rate of clean/naive/masked/hard: --lr, or TrainConfig's default for the model."""
    if cfg.lr is not None:
        return cfg.lr
    return LR_TINY if cfg.model == "tiny" else LR_LORA if cfg.lora_r else LR_FULL


def follow_up_lr(cfg: AblationConfig, mode: str) -> float:
    """A follow-up's learning rate: its ``FOLLOW_UP_LR_SHARE`` of ``base_lr`` (3 significant digits)."""
    return float(f"{base_lr(cfg) * FOLLOW_UP_LR_SHARE[mode]:.3g}")


def _train_config(cfg: AblationConfig, out: Path, mode: str, seed: int) -> TrainConfig:
    common = dict(out=str(run_dir(out, mode, seed) / "policy_run"), seed=seed, task="builtin",
                  model=os.path.expanduser(cfg.model), lora_r=cfg.lora_r,
                  num_problems=cfg.train_problems, max_steps=cfg.max_steps, eval_steps=cfg.eval_steps,
                  plateau_patience=cfg.plateau_patience, plateau_delta=cfg.plateau_delta,
                  plateau_keep_best=cfg.plateau_keep_best,
                  lr_scheduler=cfg.lr_scheduler)
    if cfg.smoke:
        common.update(num_eval=8, batch_size=8, save_steps=1000, logging_steps=1)
    common.update({k: v for k, v in (("batch_size", cfg.train_batch_size), ("num_eval", cfg.num_eval)) if v})
    base = str(stage_policy(cfg, run_dir(out, FOLLOW_UPS.get(mode, mode), seed) / "policy_run"))
    # The two follow-up rounds continue the trained hard policy under the same stopping rule and cap, at a
    # lower learning rate (DPO is known to need a small one; Rafailov et al. 2023 use 1e-6 on large models);
    # under LoRA they train new adapters on the merged hard policy.
    # The "+cont" controls continue their base policy on its own data at the on-policy round's rate.
    if mode == "hard+dpo":
        return TrainConfig(mode="dpo", init=base, lr=follow_up_lr(cfg, mode), **common)
    if mode == "hard+onpolicy":
        return TrainConfig(mode="hard", harvest_from=base, harvest_problems=cfg.harvest_problems,
                           lr=follow_up_lr(cfg, mode), **common)
    if mode in FOLLOW_UPS:
        return TrainConfig(mode=FOLLOW_UPS[mode], lr=follow_up_lr(cfg, mode), **{**common, "model": base})
    return TrainConfig(mode=mode, lr=cfg.lr, **common)


# VerifierTrainConfig fields the ablation sets itself (its own flags, or per cell)
VERIFIER_OWN = {"out": "--out", "policy": "the cell's policy", "seed": "the cell's seed",
                "labels": "--verifier-labels", "num_problems": "--verifier-problems", "epochs": "--verifier-epochs",
                "reference_problems": "--verifier-reference-problems", "task": "the built-in task"}


def verifier_knobs(text: str) -> dict[str, Any]:
    """``--verifier-knobs`` as VerifierTrainConfig fields, checked (names and values) before any work."""
    try:
        knobs = parse_knobs(text)
    except ValueError as e:
        raise ValueError(f"--verifier-knobs: {e}") from e
    names = {f.name for f in dataclasses.fields(VerifierTrainConfig)}
    for key in knobs:
        if key in VERIFIER_OWN:
            raise ValueError(f"--verifier-knobs {key}: the ablation sets it ({VERIFIER_OWN[key]})")
        if key not in names:
            raise ValueError(f"--verifier-knobs {key}: not a VerifierTrainConfig field; choose from "
                             f"{sorted(names - set(VERIFIER_OWN))}")
    try:
        VerifierTrainConfig(out="-", policy="-", **knobs)  # its own checks of the values
    except ValueError as e:
        raise ValueError(f"--verifier-knobs: {e}") from e
    return knobs


def _verifier_config(cfg: AblationConfig, pol_run: Path, seed: int) -> VerifierTrainConfig:
    small = ({"samples_per_problem": 1, "max_new_tokens": 48, "reference_slips": 1, "max_depth": 4,
              "max_step_tokens": 40} if cfg.smoke else {})
    return VerifierTrainConfig(out=str(pol_run.parent / "verifier_run"), policy=str(stage_policy(cfg, pol_run)),
                               seed=seed,
                               labels=cfg.verifier_labels, num_problems=cfg.verifier_problems,
                               epochs=cfg.verifier_epochs, reference_problems=cfg.verifier_reference_problems,
                               **{**small, **verifier_knobs(cfg.verifier_knobs)})


def _finished(folder: Path, config: Any, *, marker: str, what: str) -> bool:
    """True when ``folder`` holds a finished stage of exactly ``config``; refuse another config."""
    saved = folder / ("train_config.json" if what == "policy" else "config.json")
    if not (folder / marker).exists() or not saved.exists():
        return False
    old, new = json.loads(saved.read_text()), dataclasses.asdict(config)
    # a field the saved file lacks is newer than the stage: it trained as that field's default does
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    # paths (out, init, harvest_from, policy) locate the stage, they do not configure it: a moved
    # or copied ablation folder reuses its finished stages
    paths = ("resume", "out", "init", "harvest_from", "policy", "model")  # a "+cont" control's model is a run
    # a None field (lr, num_problems, ...) means "the model's default", which training resolves and saves
    changed = sorted(k for k in new if k not in paths and new[k] is not None and old.get(k, defaults[k]) != new[k])
    if changed:
        raise ValueError(f"{folder} holds a {what} trained with another config ({', '.join(changed)} differ); "
                         "remove it or choose another --out")
    return True


def _policy_done(cfg: AblationConfig, out: Path, mode: str, seed: int) -> bool:
    """The policy of the cell is trained with this config (and, under LoRA, merged)."""
    tc = _train_config(cfg, out, mode, seed)
    return _finished(Path(tc.out), tc, marker="metrics.json", what="policy") and stage_policy(cfg, Path(tc.out)).exists()


def _cell_done(cfg: AblationConfig, out: Path, mode: str, seed: int) -> bool:
    """Policy and verifier of the cell are trained (with this config)."""
    pol_run = run_dir(out, mode, seed) / "policy_run"
    vc = _verifier_config(cfg, pol_run, seed)
    return _policy_done(cfg, out, mode, seed) and _finished(Path(vc.out), vc, marker="metrics.json", what="verifier")


def check_dependencies(cfg: AblationConfig, out: Path, cells: list[tuple[str, int]]) -> None:
    """Refuse follow-up cells whose base policy (``FOLLOW_UPS``) is neither trained nor trained first here."""
    for mode, seed in cells:
        base = FOLLOW_UPS.get(mode)
        if base and (base, seed) not in cells and not _policy_done(cfg, out, base, seed):
            raise ValueError(f"{cell_name(mode, seed)} starts from the {base} policy of seed {seed}, which is not "
                             f"trained yet ({run_dir(out, base, seed) / 'policy_run'}): train it first "
                             f"(--stage train --only {base}:{seed}) or add {base}:{seed} to this --only (it trains first)")


def train_stage(cfg: AblationConfig, out: Path, mode: str, seed: int) -> Path:
    """Train (or reuse) the policy of (mode, seed), then its verifier; returns the sub-run folder."""
    tc = _train_config(cfg, out, mode, seed)
    pol_run = Path(tc.out)
    if not _finished(pol_run, tc, marker="metrics.json", what="policy"):
        if last_complete_checkpoint(pol_run / "checkpoints") is not None:
            print(f"rewind ablation: resuming the half-finished {mode} policy (seed {seed}) in {pol_run}")
            tc = dataclasses.replace(tc, resume=True)
        if tc.mode == "dpo":
            train_dpo(tc)
        else:
            train_sft(tc)
    if not stage_policy(cfg, pol_run).exists():  # LoRA: merge once, right after training (atomic)
        merge_lora(pol_run, stage_policy(cfg, pol_run))
    vc = _verifier_config(cfg, pol_run, seed)
    if not _finished(Path(vc.out), vc, marker="metrics.json", what="verifier"):
        train_verifier(vc, progress=False)
    return pol_run.parent


def load_stage(run: Path) -> tuple[Any, Any]:
    """(policy, verifier) of a finished sub-run: a LoRA run's merged policy when it has one."""
    merged = run / "policy_run" / MERGED
    return load(merged if merged.exists() else run / "policy_run", verifier=run / "verifier_run")


def _knobs(cfg: AblationConfig, budgets: dict, method: str) -> dict:
    base = parse_knobs(cfg.search_knobs)
    return {**base, **budgets.get(method, {})} if method not in ("decode", "decode-soft") else {}


def calibrate_budgets(cfg: AblationConfig, policy: Any, verifier: Any) -> dict:
    """Knobs giving every sampling strategy about best-of-N's mean tokens per problem.

    Tokens grow about linearly in beam width and in MCTS simulations, so one probe of each
    (width 1; 8 simulations) and a rescale suffice; the achieved means are in the table. A search
    that no inference method of ``cfg`` uses is not probed (its knobs are left out).
    """
    import numpy as np

    problems = generate_problems(cfg.calibration_problems, seed=0, split="validation")
    base = dict(parse_knobs(cfg.search_knobs), threshold=cfg.threshold, policy=policy, verifier=verifier)
    used = {INFERENCE[i][0] for m in _csv(cfg.modes) for i in cfg.inference_of(m)}

    def mean_tokens(strategy: str, **knobs: Any) -> float:
        sols = search.solve_many(problems, strategy=strategy, **base, **knobs)
        return max(1.0, float(np.mean([s.stats["tokens_generated"] for s in sols])))

    target = mean_tokens("best_of_n", n=cfg.budget)
    budgets: dict[str, Any] = {"target_tokens": target, "best_of_n": {"n": cfg.budget}}
    if "beam" in used:
        per_width = mean_tokens("beam", width=1, samples=cfg.beam_samples)
        budgets["beam"] = {"width": max(1, round(target / per_width)), "samples": cfg.beam_samples}
    if "mcts" in used:
        per_8_sims = mean_tokens("mcts", simulations=8, children=cfg.mcts_children)
        budgets["mcts"] = {"simulations": max(1, round(8 * target / per_8_sims)), "children": cfg.mcts_children}
    return budgets



def _train_cells(cfg: AblationConfig, out: Path, cells: list[tuple[str, int]]) -> None:
    """Train every cell (hard before its follow-ups); calibrate right after the calibration cell."""
    check_dependencies(cfg, out, cells)
    for mode, seed in order_cells(cells):
        with claim(run_dir(out, mode, seed) / ".train.lock", f"training {cell_name(mode, seed)}"):
            run = train_stage(cfg, out, mode, seed)
        if (mode, seed) == cfg.calibration_cell and not (out / "budgets.json").exists():
            atomic_write_json(out / "budgets.json", calibrate_budgets(cfg, *load_stage(run)))


def _budgets(cfg: AblationConfig, out: Path) -> dict:
    path = out / "budgets.json"
    if not path.exists():
        raise ValueError(f"{path} is missing: the token budgets are calibrated when cell "
                         f"{cell_name(*cfg.calibration_cell)} trains; run --stage train --only "
                         f"{cell_name(*cfg.calibration_cell)} first (a trained cell is reused)")
    return json.loads(path.read_text())


def _eval_cells(cfg: AblationConfig, out: Path, cells: list[tuple[str, int]], h: str, progress: bool) -> None:
    """Evaluate every inference method on each trained cell, into the cell's own results file."""
    budgets = _budgets(cfg, out)
    missing = [cell_name(m, s) for m, s in cells if not _cell_done(cfg, out, m, s)]
    if missing:
        raise ValueError(f"cells {', '.join(missing)} are not trained yet (policy and verifier): run "
                         f"--stage train --only {','.join(missing)} first")
    problems = load_problems("builtin", cfg.n, seed=0, split="test")
    for mode, seed in cells:
        with claim(run_dir(out, mode, seed) / ".eval.lock", f"evaluating {cell_name(mode, seed)}"):
            policy, verifier = load_stage(run_dir(out, mode, seed))
            for inf in cfg.inference_of(mode):
                method, signal = INFERENCE[inf]
                extra = {"config_hash": h, "mode": mode, "seed": seed, "inference": inf, "signal": signal}
                kw: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens) if signal is None else dict(
                    threshold=cfg.threshold, verifier=verifier if signal == "verifier" else None)
                evaluate(problems, policy=policy, method=method, out=results_path(out, mode, seed),
                         tag=f"{mode}|s{seed}|{inf}", batch_size=cfg.batch_size, seed=seed, progress=progress,
                         extra=extra, **kw, **_knobs(cfg, budgets, method))


def run_ablation(config: AblationConfig, *, progress: bool = True) -> str:
    """Run ``config.stage`` on ``config.only``'s cells (every stage and cell by default).

    Returns the report's Markdown (stages all and report) or a line saying what was done."""
    cfg = config.effective()
    out = Path(cfg.out)
    h = config_hash(cfg, ignore=NOT_HASHED)
    record = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("stage", "only")}
    check_config(out, {"config_hash": h, "config": record}, command="ablation", ignore=NOT_HASHED)
    cells = cfg.selected
    if cfg.stage in ("all", "train"):
        _train_cells(cfg, out, cells)
    if cfg.stage in ("all", "eval"):
        _eval_cells(cfg, out, cells, h, progress)
    if cfg.stage in ("all", "report"):
        budgets = json.loads((out / "budgets.json").read_text()) if (out / "budgets.json").exists() else {}
        return write_report(out, cfg, budgets, h)
    done = "trained" if cfg.stage == "train" else "evaluated"
    return f"rewind ablation: {done} {', '.join(cell_name(m, s) for m, s in cells)} in {out}"
