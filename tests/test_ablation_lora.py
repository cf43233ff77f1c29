"""The ablation on a pretrained model with LoRA (issue 17): the policy knobs, their validation, the
config hash of older (tiny) ablations, what every stage is pointed at; and, on SmolLM2-135M (the
real-model tier, tests/real_model.py), a LoRA ablation end to end: train → merge → verifier →
calibration → eval → report."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from experiments.inputs import config_hash
from experiments.studies.ablation import (
    MERGED,
    NOT_HASHED,
    AblationConfig,
    _finished,
    _train_config,
    _verifier_config,
    run_ablation,
    stage_policy,
)
from experiments.studies.ablation_cells import run_dir
from experiments.studies.ablation_report import policy_text

# config_hash of the default AblationConfig (with "out", "modes" and "seeds" not hashed), and of the
# ablation17 run (--verifier-problems 400) whose finished cells and committed results carry it (its rows
# were re-stamped from 6cec5f1e4167 when modes/seeds left the hash; nothing else changed)
DEFAULT_HASH, ABLATION17_HASH = "7576f7b0904d", "7552c28038d9"
LORA = dict(model="/models/smollm2", lora_r=16)


def test_policy_knobs_are_validated_up_front():
    with pytest.raises(ValueError, match=r"--lora-r needs a pretrained --model.*tiny policy trains from scratch"):
        AblationConfig(out="x", lora_r=16)
    for bad, match in ((dict(model=" "), "--model is empty"), (dict(**LORA, lr=0.0), "lr must be > 0"),
                       (dict(model="m", lora_r=-1), "lora_r must be >= 0"),
                       (dict(train_batch_size=0), "train_batch_size must be >= 1"),
                       (dict(num_eval=0), "num_eval must be >= 1")):
        with pytest.raises(ValueError, match=match):
            AblationConfig(out="x", **bad)
    cfg = AblationConfig(out="x", **LORA, lr=3e-4, train_batch_size=4, num_eval=16)
    assert (cfg.model, cfg.lora_r, cfg.lr, cfg.train_batch_size, cfg.num_eval) == ("/models/smollm2", 16, 3e-4, 4, 16)


def test_the_hash_of_a_default_config_is_unchanged_by_the_policy_knobs():
    default = AblationConfig(out="runs/ablation17")
    assert config_hash(default.effective(), ignore=NOT_HASHED) == DEFAULT_HASH
    ablation17 = AblationConfig(out="runs/ablation17", verifier_problems=400)
    assert config_hash(ablation17, ignore=NOT_HASHED) == ABLATION17_HASH
    spelled = AblationConfig(out="runs/ablation17", model="tiny", lora_r=0, lr=None)  # the defaults, given
    assert config_hash(spelled, ignore=NOT_HASHED) == DEFAULT_HASH
    changed = {config_hash(dataclasses.replace(default, **kw), ignore=NOT_HASHED)
               for kw in (dict(LORA), dict(lr=1e-3), dict(train_batch_size=16), dict(num_eval=64))}
    assert DEFAULT_HASH not in changed and len(changed) == 4  # a set knob is a new config


def test_a_tiny_ablation_trains_exactly_the_policies_it_trained_before(tmp_path):
    """The default config's TrainConfigs are the ones written before the knobs existed, so the finished
    policies of an older tiny ablation read as finished (and the follow-ups keep 5e-4 / 1e-3)."""
    cfg = AblationConfig(out=str(tmp_path))
    tc = {m: _train_config(cfg, tmp_path, m, 0) for m in ("hard", "hard+dpo", "hard+onpolicy")}
    assert (tc["hard"].model, tc["hard"].lora_r, tc["hard"].lr, tc["hard"].batch_size, tc["hard"].num_eval) == (
        "tiny", 0, None, 32, 128)
    assert (tc["hard+dpo"].lr, tc["hard+onpolicy"].lr) == (5e-4, 1e-3)
    hard_run = run_dir(tmp_path, "hard", 0) / "policy_run"
    assert tc["hard+dpo"].init == tc["hard+onpolicy"].harvest_from == str(hard_run)  # no merged folder
    assert _verifier_config(cfg, hard_run, 0).policy == str(hard_run)
    hard_run.mkdir(parents=True)
    saved = {**dataclasses.asdict(tc["hard"]), "lr": 3e-3, "num_problems": 8000}  # as training resolves them
    (hard_run / "train_config.json").write_text(json.dumps(saved))
    (hard_run / "metrics.json").write_text("{}")
    assert _finished(hard_run, tc["hard"], marker="metrics.json", what="policy")
    smoke = _train_config(AblationConfig(out=str(tmp_path), smoke=True).effective(), tmp_path, "hard", 0)
    assert (smoke.batch_size, smoke.num_eval) == (8, 8)


def test_train_config_passes_the_model_lora_lr_and_sizes_through(tmp_path):
    cfg = AblationConfig(out=str(tmp_path), **LORA, lr=3e-4, train_batch_size=4, num_eval=16)
    hard = _train_config(cfg, tmp_path, "hard", 1)
    assert (hard.model, hard.lora_r, hard.lr, hard.batch_size, hard.num_eval, hard.mode) == (
        "/models/smollm2", 16, 3e-4, 4, 16, "hard")
    merged = run_dir(tmp_path, "hard", 1) / "policy_run" / MERGED
    dpo, onpolicy = _train_config(cfg, tmp_path, "hard+dpo", 1), _train_config(cfg, tmp_path, "hard+onpolicy", 1)
    assert (dpo.mode, dpo.init, dpo.lr, dpo.lora_r) == ("dpo", str(merged), 5e-5, 16)  # 1/6 of the base lr
    assert (onpolicy.harvest_from, onpolicy.lr, onpolicy.lora_r) == (str(merged), 1e-4, 16)  # 1/3
    # no --lr: the follow-ups scale TrainConfig's LoRA default (1e-4), the SFT modes leave it to training
    plain = AblationConfig(out=str(tmp_path), **LORA)
    assert _train_config(plain, tmp_path, "naive", 0).lr is None
    assert _train_config(plain, tmp_path, "hard+dpo", 0).lr == pytest.approx(1.67e-5)
    pol_run = run_dir(tmp_path, "naive", 0) / "policy_run"
    assert stage_policy(cfg, pol_run) == pol_run / MERGED
    assert _verifier_config(cfg, pol_run, 0).policy == str(pol_run / MERGED)  # the verifier reads the merged model
    assert _verifier_config(cfg, pol_run, 0).out == str(pol_run.parent / "verifier_run")
    assert _train_config(AblationConfig(out="x", model="~/m"), Path("x"), "clean", 0).model == str(Path.home() / "m")


def test_the_report_says_what_policy_trained():
    assert policy_text(AblationConfig(out="x")).startswith("the built-in tiny policy, trained from scratch")
    text = policy_text(AblationConfig(out="x", **LORA, lr=3e-4, modes="naive,masked,hard"))
    assert text == "`/models/smollm2`, LoRA rank 16 (merged into the base after training), at learning rate 0.0003"


def test_verifier_knobs_reach_every_verifier_and_are_checked_up_front(tmp_path):
    cfg = AblationConfig(out=str(tmp_path), verifier_knobs="beam_width=2,max_depth=6,reference_slips=1")
    vc = _verifier_config(cfg, run_dir(tmp_path, "hard", 0) / "policy_run", 0)
    assert (vc.beam_width, vc.max_depth, vc.reference_slips, vc.beam_samples) == (2, 6, 1, 4)
    for bad, match in (("epochs=3", r"the ablation sets it \(--verifier-epochs\)"), ("width", "KEY=VALUE"),
                       ("beam_widht=2", "not a VerifierTrainConfig field.*beam_width"),
                       ("beam_width=0", "--verifier-knobs: .*beam_width")):
        with pytest.raises(ValueError, match=match):
            AblationConfig(out="x", verifier_knobs=bad)


def test_calibration_probes_only_the_searches_evaluated(monkeypatch):
    import experiments.studies.ablation as ablation

    calls = []

    class Solution:
        def __init__(self, tokens):
            self.stats = {"tokens_generated": tokens}

    def solve_many(problems, strategy, **knobs):
        calls.append(strategy)
        return [Solution({"best_of_n": 40, "beam": 10, "mcts": 20}[strategy]) for _ in problems]

    monkeypatch.setattr(ablation.search, "solve_many", solve_many)
    cfg = AblationConfig(out="x", modes="naive,hard", inference="greedy-rewind,beam+verifier", signal_modes="",
                         calibration_problems=2, budget=4)
    assert ablation.calibrate_budgets(cfg, None, None) == {
        "target_tokens": 40.0, "best_of_n": {"n": 4}, "beam": {"width": 4, "samples": 4}}
    assert calls == ["best_of_n", "beam"]  # no MCTS cell: no MCTS probe
    calls.clear()
    full = ablation.calibrate_budgets(AblationConfig(out="x", calibration_problems=2), None, None)
    assert calls == ["best_of_n", "beam", "mcts"] and full["mcts"] == {"simulations": 16, "children": 4}


def _smoke_config(out: Path, model: Path) -> AblationConfig:
    """2 modes x 1 seed, 2 optimiser steps of 2 examples, 3 test problems, a verifier on 3 problems."""
    return AblationConfig(
        out=str(out), model=str(model), lora_r=4, lr=3e-4, modes="naive,hard", seeds="0", signal_modes="",
        inference="greedy-rewind,beam+verifier", n=3, max_steps=2, eval_steps=1, plateau_patience=0,
        train_problems=4, num_eval=2, train_batch_size=2, verifier_problems=3, verifier_epochs=1,
        verifier_reference_problems=2, calibration_problems=1, budget=1, beam_samples=2, max_new_tokens=32,
        search_knobs="max_depth=3,max_step_tokens=16", verifier_knobs="beam_width=1,beam_samples=2,max_depth=3,"
        "max_step_tokens=16,reference_slips=1", batch_size=4)


@pytest.mark.slow
def test_lora_ablation_on_smollm2_end_to_end(smollm2_dir, tmp_path):
    """SmolLM2-135M with LoRA, naive and hard: every stage runs on the merged policies; a rerun reuses all."""
    out = tmp_path / "ab"
    start = time.perf_counter()
    text = run_ablation(_smoke_config(out, smollm2_dir), progress=False)
    print(f"SmolLM2 LoRA smoke ablation: {time.perf_counter() - start:.0f} s")
    for mode in ("naive", "hard"):
        pol_run = run_dir(out, mode, 0) / "policy_run"
        assert (pol_run / "policy" / "adapter_config.json").exists()  # trained as LoRA adapters ...
        assert (pol_run / MERGED / "model.safetensors").exists()  # ... merged once for every later stage
        assert json.loads((pol_run / "train_config.json").read_text())["lora_r"] == 4
        assert json.loads((pol_run / "metrics.json").read_text())["global_step"] == 2
        ver = json.loads((pol_run.parent / "verifier_run" / "config.json").read_text())
        assert ver["policy"] == str(pol_run / MERGED)
    rows = [json.loads(line) for p in sorted(out.glob("results-*.jsonl")) for line in p.read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2 and {r["inference"] for r in rows} == {"greedy-rewind", "beam+verifier"}
    assert "| naive |" in text and "| hard |" in text and "LoRA rank 4" in text
    assert (out / "budgets.json").exists() and (out / "ablation.md").exists()
    assert run_ablation(_smoke_config(out, smollm2_dir), progress=False) == text  # everything reused


def test_wilson_interval_always_holds_the_proportion():
    from experiments.studies.stats import wilson

    assert wilson(0, 3)[0] == 0.0  # was 5.6e-17: a negative error bar, the plot of a 3-problem run failed
    for n in range(1, 60):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
