"""The ablation: which training fix matters, under which inference method?

Training modes {clean, naive, masked, hard, hard+dpo, hard+onpolicy} × inference {greedy soft
(``decode-soft``), greedy rewind (``decode``), best-of-N, beam + verifier, MCTS + verifier}, over
several training seeds, on N held-out built-in problems; plus beam/MCTS pruned by the policy's own
P(⟨b⟩) instead of the verifier. The sampling strategies run at matched token budgets: best-of-N's
``budget`` samples set the target mean tokens per problem, and beam width / MCTS simulations are
calibrated once (on validation problems, the first seed's ``hard`` policy) to hit it; the table
reports the budgets achieved.

Stages, each reused when finished (a rerun resumes): for every (mode, seed) a policy
(``runs/<mode>-s<seed>/policy_run``; dpo and on-policy start from the ``hard`` run of the same seed)
and its verifier (``.../verifier_run``); the calibration (``budgets.json``); every evaluation cell
(rows appended to ``results.jsonl``, keyed by tag). Every row carries the config hash; a rerun with
another config into the same folder is refused. The table, tests and plot: ``ablation_report``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import search
from experiments.inputs import check_config, config_hash, load_problems
from experiments.studies.ablation_report import write_report
from experiments.studies.evaluate import evaluate
from experiments.wiring import load
from policy.atomic import atomic_write_json
from policy.data import generate_problems
from policy.dpo import train_dpo
from policy.sft import last_complete_checkpoint, train_sft
from policy.train_config import TrainConfig
from search.config import SearchConfig, parse_knobs
from search.knobs import knob, knob_of
from verifier.config import VerifierTrainConfig
from verifier.train import train_verifier

__all__ = ["AblationConfig", "INFERENCE", "MODES", "calibrate_budgets", "run_ablation", "train_stage"]

MODES = ("clean", "naive", "masked", "hard", "hard+dpo", "hard+onpolicy")
# inference label -> (evaluate method, pruning signal)
INFERENCE = {"greedy-soft": ("decode-soft", None), "greedy-rewind": ("decode", None),
             "best-of-n": ("best_of_n", "verifier"), "beam+verifier": ("beam", "verifier"),
             "mcts+verifier": ("mcts", "verifier"), "beam+P(b)": ("beam", "policy"), "mcts+P(b)": ("mcts", "policy")}
SMOKE = dict(n=8, seeds="0", max_steps=3, train_problems=48, harvest_problems=8, verifier_problems=24,
             calibration_problems=3, budget=2, beam_samples=2, max_new_tokens=48,
             search_knobs="max_depth=3,max_step_tokens=24")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass(frozen=True, kw_only=True)
class AblationConfig:
    """The whole ablation; ``--smoke`` shrinks it to a 2-3 minute run (see ``SMOKE``)."""

    out: str = knob(None, "ablation folder: runs/, budgets.json, config.json, results.jsonl, ablation.md, ablation.png")
    modes: str = knob(",".join(MODES), f"comma-separated training modes from {', '.join(MODES)}; 'clean' is the baseline")
    inference: str = knob(",".join(k for k in INFERENCE if "P(b)" not in k),
                          f"comma-separated inference methods from {', '.join(INFERENCE)}")
    signal_modes: str = knob("hard", "modes that also run beam/MCTS pruned by the policy's own P(⟨b⟩) ('' for none)")
    n: int = knob(500, "held-out built-in test problems (>= 1)")
    seeds: str = knob("0,1,2", "training seeds, comma-separated (each trains every mode anew)")
    threshold: float = knob_of(SearchConfig, "threshold")
    budget: int = knob(8, "best-of-N's N; beam width and MCTS simulations are calibrated to its mean tokens (>= 1)")
    beam_samples: int = knob(4, "children per beam (M); the width is calibrated (>= 1)")
    mcts_children: int = knob(4, "children per MCTS expansion (K); simulations are calibrated (>= 1)")
    calibration_problems: int = knob(16, "validation problems used to match the token budgets (>= 1)")
    search_knobs: str = knob("", "extra knobs for every search method, KEY=VALUE,... (e.g. max_depth=16)")
    max_new_tokens: int = knob(320, "decoders: longest generation in tokens (>= 1)")
    train_problems: int = knob(3000, "training problems per policy (TrainConfig.num_problems)")
    max_steps: int = knob(-1, "optimiser steps per policy (-1: one epoch)")
    harvest_problems: int = knob(256, "hard+onpolicy: problems the hard policy is sampled on")
    verifier_problems: int = knob(200, "problems the verifier labels come from (>= 3)")
    verifier_labels: str = knob("injected", "verifier label source: injected, rollouts, mc or mix")
    batch_size: int = knob(8, "problems solved together (>= 1)")
    smoke: bool = knob(False, "tiny smoke run (8 problems, 1 seed, 3 steps): checks the pipeline in 2-3 minutes",
                     flag=True)

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out (the ablation folder) is required")
        bad = [m for m in _csv(self.modes) if m not in MODES]
        if bad or not _csv(self.modes):
            raise ValueError(f"unknown training mode(s) {bad}; choose from {MODES}")
        if set(_csv(self.modes)) & {"hard+dpo", "hard+onpolicy"} and "hard" not in _csv(self.modes):
            raise ValueError("hard+dpo and hard+onpolicy start from the hard policy: include 'hard' in --modes")
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
        for name in ("n", "budget", "beam_samples", "mcts_children", "calibration_problems", "max_new_tokens",
                     "train_problems", "harvest_problems", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.verifier_problems < 3:
            raise ValueError(f"verifier_problems must be >= 3, got {self.verifier_problems}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def effective(self) -> AblationConfig:
        """The config actually run: ``SMOKE`` applied in smoke mode."""
        return dataclasses.replace(self, **SMOKE) if self.smoke else self

    @property
    def cells(self) -> list[tuple[str, int, str]]:
        """Every (mode, seed, inference) evaluated, in order."""
        signal = [k for k in INFERENCE if "P(b)" in k]
        return [(m, int(s), i) for s in _csv(self.seeds) for m in _csv(self.modes)
                for i in _csv(self.inference) + (signal if m in _csv(self.signal_modes) else [])]


def _run_dir(out: Path, mode: str, seed: int) -> Path:
    return out / "runs" / f"{mode.replace('+', '_')}-s{seed}"


def _train_config(cfg: AblationConfig, out: Path, mode: str, seed: int):
    common = dict(out=str(_run_dir(out, mode, seed) / "policy_run"), seed=seed, task="builtin",
                  num_problems=cfg.train_problems, max_steps=cfg.max_steps)
    if cfg.smoke:
        common.update(num_eval=8, batch_size=8, eval_steps=1000, save_steps=1000, logging_steps=1)
    hard = str(_run_dir(out, "hard", seed) / "policy_run")
    # The two follow-up rounds continue the trained hard policy: a third of its steps at a lower
    # learning rate (DPO is known to need a small one; Rafailov et al. 2023 use 1e-6 on large models).
    follow_up = dict(common, max_steps=max(1, cfg.max_steps // 3) if cfg.max_steps > 0 else -1)
    if mode == "hard+dpo":
        return TrainConfig(mode="dpo", init=hard, lr=5e-4, **{k: v for k, v in follow_up.items()})
    if mode == "hard+onpolicy":
        return TrainConfig(mode="hard", harvest_from=hard, harvest_problems=cfg.harvest_problems, lr=1e-3,
                           **follow_up)
    return TrainConfig(mode=mode, **common)


def _finished(folder: Path, config: Any, *, marker: str, what: str) -> bool:
    """True when ``folder`` holds a finished stage of exactly ``config``; refuse another config."""
    saved = folder / ("train_config.json" if what == "policy" else "config.json")
    if not (folder / marker).exists() or not saved.exists():
        return False
    old, new = json.loads(saved.read_text()), dataclasses.asdict(config)
    # paths (out, init, harvest_from, policy) locate the stage, they do not configure it: a moved
    # or copied ablation folder reuses its finished stages
    paths = ("resume", "out", "init", "harvest_from", "policy")
    # a None field (lr, num_problems, ...) means "the model's default", which training resolves and saves
    changed = sorted(k for k in new if k not in paths and new[k] is not None and old.get(k) != new[k])
    if changed:
        raise ValueError(f"{folder} holds a {what} trained with another config ({', '.join(changed)} differ); "
                         "remove it or choose another --out")
    return True


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

    vc = VerifierTrainConfig(out=str(pol_run.parent / "verifier_run"), policy=str(pol_run), seed=seed,
                             labels=cfg.verifier_labels, num_problems=cfg.verifier_problems,
                             **({"epochs": 3, "samples_per_problem": 1, "max_new_tokens": 48, "reference_problems": 24,
                                 "reference_slips": 1, "max_depth": 4, "max_step_tokens": 40} if cfg.smoke
                                else {"epochs": 12}))  # the step verifier: 12 epochs, as the demo's
    if not _finished(Path(vc.out), vc, marker="metrics.json", what="verifier"):
        train_verifier(vc, progress=False)
    return pol_run.parent


def load_stage(run: Path) -> tuple[Any, Any]:
    """(policy, verifier) of a finished sub-run."""
    return load(run / "policy_run", verifier=run / "verifier_run")


def _knobs(cfg: AblationConfig, budgets: dict, method: str) -> dict:
    base = parse_knobs(cfg.search_knobs)
    return {**base, **budgets.get(method, {})} if method not in ("decode", "decode-soft") else {}


def calibrate_budgets(cfg: AblationConfig, policy: Any, verifier: Any) -> dict:
    """Knobs giving every sampling strategy about best-of-N's mean tokens per problem.

    Tokens grow about linearly in beam width and in MCTS simulations, so one probe of each
    (width 1; 8 simulations) and a rescale suffice; the achieved means are in the table.
    """
    import numpy as np

    problems = generate_problems(cfg.calibration_problems, seed=0, split="validation")
    base = dict(parse_knobs(cfg.search_knobs), threshold=cfg.threshold, policy=policy, verifier=verifier)

    def mean_tokens(strategy: str, **knobs: Any) -> float:
        sols = search.solve_many(problems, strategy=strategy, **base, **knobs)
        return max(1.0, float(np.mean([s.stats["tokens_generated"] for s in sols])))

    target = mean_tokens("best_of_n", n=cfg.budget)
    per_width = mean_tokens("beam", width=1, samples=cfg.beam_samples)
    per_8_sims = mean_tokens("mcts", simulations=8, children=cfg.mcts_children)
    return {"target_tokens": target,
            "best_of_n": {"n": cfg.budget},
            "beam": {"width": max(1, round(target / per_width)), "samples": cfg.beam_samples},
            "mcts": {"simulations": max(1, round(8 * target / per_8_sims)), "children": cfg.mcts_children}}


def run_ablation(config: AblationConfig, *, progress: bool = True) -> str:
    """Run every stage not yet finished; write the report. Returns the Markdown table."""
    cfg = config.effective()
    out = Path(cfg.out)
    h = config_hash(cfg, ignore=("batch_size",))
    check_config(out, {"config_hash": h, "config": dataclasses.asdict(cfg)}, command="ablation", ignore=("batch_size",))
    modes, seeds = _csv(cfg.modes), [int(s) for s in _csv(cfg.seeds)]
    runs = {}
    for seed in seeds:  # hard first: dpo and on-policy start from it
        for mode in sorted(modes, key=lambda m: (m != "hard", MODES.index(m))):
            runs[mode, seed] = train_stage(cfg, out, mode, seed)
    budget_path = out / "budgets.json"
    if budget_path.exists():
        budgets = json.loads(budget_path.read_text())
    else:
        calib = runs.get(("hard", seeds[0]), runs[modes[0], seeds[0]])
        budgets = calibrate_budgets(cfg, *load_stage(calib))
        atomic_write_json(budget_path, budgets)
    problems = load_problems("builtin", cfg.n, seed=0, split="test")
    loaded: tuple[tuple[str, int], Any] | None = None
    for mode, seed, inf in cfg.cells:
        if loaded is None or loaded[0] != (mode, seed):
            loaded = ((mode, seed), load_stage(runs[mode, seed]))
        policy, verifier = loaded[1]
        method, signal = INFERENCE[inf]
        extra = {"config_hash": h, "mode": mode, "seed": seed, "inference": inf, "signal": signal}
        kw: dict[str, Any] = dict(max_new_tokens=cfg.max_new_tokens) if signal is None else dict(
            threshold=cfg.threshold, verifier=verifier if signal == "verifier" else None)
        evaluate(problems, policy=policy, method=method, out=out / "results.jsonl", tag=f"{mode}|s{seed}|{inf}",
                 batch_size=cfg.batch_size, seed=seed, progress=progress, extra=extra, **kw,
                 **_knobs(cfg, budgets, method))
    return write_report(out, cfg, budgets, h)
