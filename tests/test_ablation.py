"""Ablation statistics on known inputs, config validation, and the smoke run end to end (slow)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from experiments.inputs import config_hash
from experiments.studies.ablation import (
    NOT_HASHED,
    AblationConfig,
    _finished,
    _train_config,
    check_dependencies,
    run_ablation,
)
from experiments.studies.ablation_cells import claim, order_cells, parse_only, results_path, run_dir
from experiments.studies.ablation_report import Cell, cells_of, mechanism_lines, signal_lines, table_lines
from experiments.studies.stats import bootstrap_ci, mcnemar, wilson


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_mcnemar_exact_binomial():
    # b = 8 discordant pairs only A got right, c = 2 only B: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * 56 / 1024
    a = {i: i < 8 or i >= 10 for i in range(20)}
    b = {i: 8 <= i for i in range(20)}
    t = mcnemar(a, b)
    assert (t.n, t.only_a, t.only_b) == (20, 8, 2)
    assert t.p_value == pytest.approx(112 / 1024)
    assert mcnemar({1: True, 2: False}, {1: True, 2: False, 3: True}).p_value == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="share no problem"):
        mcnemar({1: True}, {2: True})


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([0.0, 1.0] * 200)
    assert lo < 0.5 < hi and hi - lo < 0.15
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([0, 1, 1, 0, 1], seed=3) == bootstrap_ci([0, 1, 1, 0, 1], seed=3)


def _rows(mode, inference, correct_by_seed, tokens=10):
    return [{"mode": mode, "inference": inference, "problem_id": f"p{i}", "seed": seed, "correct": c,
             "stats": {"tokens_generated": tokens}}
            for seed, cs in correct_by_seed.items() for i, c in enumerate(cs)]


def test_table_and_signal_lines_on_known_rows():
    rows = (_rows("clean", "beam+verifier", {0: [0, 0, 1, 0]})
            + _rows("hard", "beam+verifier", {0: [1, 1, 1, 0]})
            + _rows("hard", "beam+P(b)", {0: [1, 0, 1, 0]}))
    cells = cells_of(rows)
    assert cells["hard", "beam+verifier"].accuracy == 0.75 and cells["clean", "beam+verifier"].n == 4
    text = "\n".join(table_lines(cells, ["clean", "hard"], ["beam+verifier"]))
    assert "0.250 [" in text and "Δ +0.500, p=0.500 (2:0)" in text  # 2 discordant, both for hard: p = 2/4
    sig = "\n".join(signal_lines(cells))
    assert "| hard | beam | 0.750 | 0.500 | +0.250 | 1.000 (1:0) |" in sig


def test_cell_pools_seeds_and_bootstraps_over_problems():
    cell = Cell(_rows("hard", "mcts+verifier", {0: [1, 1, 0, 0], 1: [1, 0, 0, 0]}))
    assert cell.n == 8 and cell.accuracy == 3 / 8 and cell.per_seed == {0: 0.5, 1: 0.25}
    lo, hi = cell.ci()
    assert 0 <= lo < 3 / 8 < hi <= 1


def test_config_validation():
    with pytest.raises(ValueError, match="unknown training mode"):
        AblationConfig(out="x", modes="clean,hardd")
    with pytest.raises(ValueError, match="include 'hard'"):
        AblationConfig(out="x", modes="clean,hard+dpo", signal_modes="")
    with pytest.raises(ValueError, match="clean\\+cont starts from the clean policy: include 'clean'"):
        AblationConfig(out="x", modes="hard,clean+cont")
    with pytest.raises(ValueError, match="unknown inference"):
        AblationConfig(out="x", inference="beam")
    with pytest.raises(ValueError, match="seeds"):
        AblationConfig(out="x", seeds="0,a")
    for bad, match in ((dict(plateau_patience=-1), "plateau_patience"), (dict(plateau_delta=1.0), "plateau_delta"),
                       (dict(eval_steps=0), "eval_steps"), (dict(verifier_epochs=0), "verifier_epochs"),
                       (dict(verifier_reference_problems=-1), "verifier_reference_problems"),
                       (dict(max_steps=0), "max_steps"), (dict(stage="fit"), "stage")):
        with pytest.raises(ValueError, match=match):
            AblationConfig(out="x", **bad)
    cfg = AblationConfig(out="x", smoke=True).effective()
    assert cfg.n == 8 and cfg.seeds == "0"
    assert len(cfg.cells) == 8 * 5 + 2  # every mode x method, plus the P(b) signal for hard
    full = AblationConfig(out="x")
    assert (full.max_steps, full.plateau_patience, full.eval_steps, full.verifier_epochs,
            full.verifier_reference_problems) == (1500, 3, 50, 8, 2000)


def test_only_picks_cells_and_refuses_unknown_ones():
    modes, seeds = ["clean", "hard", "hard+dpo"], [0, 1]
    assert parse_only("", modes, seeds) == [(m, s) for s in seeds for m in modes]
    assert parse_only(" hard+dpo:1, clean:0 ,hard:1", modes, seeds) == [("clean", 0), ("hard", 1), ("hard+dpo", 1)]
    for bad, match in (("hard", "MODE:SEED"), ("hard:x", "MODE:SEED"), ("naive:0", "not a cell"),
                       ("hard:2", "not a cell")):
        with pytest.raises(ValueError, match=match):
            parse_only(bad, modes, seeds)
    with pytest.raises(ValueError, match="not a cell"):
        AblationConfig(out="x", seeds="0", only="hard:1")
    assert order_cells([("hard+dpo", 0), ("clean", 1), ("clean", 0), ("hard", 0)]) == [
        ("hard", 0), ("clean", 0), ("hard+dpo", 0), ("clean", 1)]
    assert AblationConfig(out="x", only="clean:2").selected == [("clean", 2)]


def _fake_policy(cfg, out, mode, seed, **config_changes):
    """A 'finished' policy stage: its train_config.json (as training writes it) and metrics.json."""
    tc = _train_config(cfg, out, mode, seed)
    folder = run_dir(out, mode, seed) / "policy_run"
    folder.mkdir(parents=True)
    saved = {**dataclasses.asdict(tc), **config_changes}
    (folder / "train_config.json").write_text(json.dumps(saved))
    (folder / "metrics.json").write_text(json.dumps({"global_step": 1}))
    return tc, folder


def test_follow_ups_are_refused_until_their_hard_policy_is_trained(tmp_path):
    cfg = AblationConfig(out=str(tmp_path), seeds="0,1")
    with pytest.raises(ValueError, match=r"hard\+dpo:1 starts from the hard policy of seed 1.*--only hard:1"):
        check_dependencies(cfg, tmp_path, [("clean", 1), ("hard+dpo", 1)])
    check_dependencies(cfg, tmp_path, [("hard", 1), ("hard+dpo", 1), ("hard+onpolicy", 1)])  # trained first
    _fake_policy(cfg, tmp_path, "hard", 1)
    check_dependencies(cfg, tmp_path, [("hard+onpolicy", 1)])  # hard:1 finished
    with pytest.raises(ValueError, match="hard\\+onpolicy:0"):
        check_dependencies(cfg, tmp_path, [("hard+onpolicy", 0)])


def test_a_policy_saved_before_the_plateau_knobs_reads_as_trained_without_them(tmp_path):
    off = AblationConfig(out=str(tmp_path), plateau_patience=0)
    tc, folder = _fake_policy(off, tmp_path, "clean", 0)
    old = {k: v for k, v in json.loads((folder / "train_config.json").read_text()).items()
           if not k.startswith("plateau_")}  # an old run's file: no plateau keys
    (folder / "train_config.json").write_text(json.dumps(old))
    assert _finished(folder, tc, marker="metrics.json", what="policy")  # missing keys = their (off) defaults
    on = _train_config(AblationConfig(out=str(tmp_path)), tmp_path, "clean", 0)
    with pytest.raises(ValueError, match="plateau_patience differ"):
        _finished(folder, on, marker="metrics.json", what="policy")


def test_a_cell_claimed_by_a_live_process_is_refused_and_a_dead_claim_taken_over(tmp_path):
    lock = tmp_path / "cell" / ".train.lock"
    lock.parent.mkdir()
    lock.write_text(f"{os.getppid()}\n")  # a live process that is not this one
    with pytest.raises(RuntimeError, match=f"process {os.getppid()}"):
        with claim(lock, "training hard:0"):
            pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    lock.write_text(f"{dead}\n")
    with claim(lock, "training hard:0"):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def test_eval_and_report_stages_train_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"budgets.json is missing.*--only hard:0"):
        run_ablation(AblationConfig(out=str(tmp_path), stage="eval", only="clean:0"), progress=False)
    (tmp_path / "budgets.json").write_text(json.dumps({"target_tokens": 10}))
    with pytest.raises(ValueError, match=r"cells clean:0 are not trained yet.*--stage train --only clean:0"):
        run_ablation(AblationConfig(out=str(tmp_path), stage="eval", only="clean:0"), progress=False)
    tmp_path = tmp_path / "report"  # another config: another folder
    cfg = AblationConfig(out=str(tmp_path), modes="clean,hard", seeds="0,1", stage="report")
    h = config_hash(cfg, ignore=NOT_HASHED)
    for mode, correct in (("clean", {0: [0, 0, 1, 0], 1: [0, 1, 1, 0]}), ("hard", {0: [1, 1, 1, 0], 1: [1, 0, 1, 1]})):
        rows = [{**r, "config_hash": h, "tag": f"{mode}|s{r['seed']}|greedy-rewind"}
                for r in _rows(mode, "greedy-rewind", correct)]
        for seed in (0, 1):
            results_path(tmp_path, mode, seed).parent.mkdir(exist_ok=True)
            results_path(tmp_path, mode, seed).write_text(
                "".join(json.dumps(r) + "\n" for r in rows if r["seed"] == seed))
    _fake_policy(cfg, tmp_path, "hard", 0)
    text = run_ablation(cfg, progress=False)
    assert "| hard | 0.250 / 0.500 · sd 0.177 | " not in text  # hard's own accuracies are 0.75 / 0.75
    assert "| hard | 0.750 / 0.750 · sd 0.000<br>Δ per seed +0.250 … +0.500 |" in text
    assert "| clean | 0 | not trained |" in text and "| hard | 0 | 1 | –" in text
    assert not (run_dir(tmp_path, "clean", 0) / "policy_run").exists()  # nothing trained


def test_training_table_reads_each_policy_metrics(tmp_path):
    from experiments.studies.ablation_report import training_lines

    folder = run_dir(tmp_path, "hard", 0) / "policy_run"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "global_step": 400, "stopped_early": True, "plateau_step": 400, "best_eval_loss": 0.05321,
        "best_eval_step": 250, "eval_loss": 0.0541, "train_tokens": 1234567, "train_runtime": 600.0}))
    old = run_dir(tmp_path, "clean", 0) / "policy_run"
    old.mkdir(parents=True)  # written before the plateau keys: best eval from log_history
    (old / "metrics.json").write_text(json.dumps({"global_step": 300, "eval_loss": 0.2, "log_history": [
        {"eval_loss": 0.3, "step": 100}, {"eval_loss": 0.19, "step": 200}, {"loss": 0.1, "step": 300}]}))
    ver = run_dir(tmp_path, "hard", 0) / "verifier_run"
    ver.mkdir(parents=True)
    (ver / "metrics.json").write_text(json.dumps({"default_threshold": 0.9, "test": {"sibling_pairs": 446, "rankers": {
        "verifier": {"sibling_auroc": 0.8312}, "step logprob": {"sibling_auroc": 0.7001}}}}))
    text = "\n".join(training_lines(tmp_path, ["clean", "hard", "naive"], [0]))
    assert "| hard | 0 | 400 | yes (step 400) | 0.0532 (250) | 0.0541 | 1,234,567 | 10.0 | 0.831 / 0.700 (446) | 0.9 |" in text
    assert "| clean | 0 | 300 | – | 0.1900 (200) | 0.2000 | – | – |" in text
    assert "| naive | 0 | not trained |" in text


def test_mechanism_table_counts_the_runs_of_greedy_rewind():
    def row(mode, correct, runs, effects=None):
        stats = {"tokens_generated": 5, "runs": runs, **({"b_effects": effects} if effects else {})}
        return {"mode": mode, "inference": "greedy-rewind", "problem_id": "p", "seed": 0, "correct": correct,
                "stats": stats}

    rows = [row("hard", True, 2, {"runs": 2, "fix": 1, "harm": 0, "other": 1}),
            row("hard", False, 1, {"runs": 1, "fix": 0, "harm": 1, "other": 0}),
            row("hard", True, 0, {"runs": 0, "fix": 0, "harm": 0, "other": 0}),
            row("hard", False, 0, {"runs": 0, "fix": 0, "harm": 0, "other": 0}),
            row("clean", False, 1),  # an old row: runs known, effects not
            {**row("hard", True, 9), "inference": "beam+verifier"}]  # other inference: not counted
    text = "\n".join(mechanism_lines(rows, ["clean", "hard"]))
    # hard: 2 of 4 solutions hold a run (accuracy 0.5 with, 0.5 without); 3 runs, 2 on an error, 1 harm, 1 fix of 2
    assert "| hard | 4 | 50.0% | 0.500 / 0.500 | 3 | 66.7% (2) | 33.3% (1) | 50.0% (1) |" in text
    assert "| clean | 1 | 100.0% | 0.000 / – | 1 | – | – | – |" in text
    assert mechanism_lines(rows, ["naive"]) == []


def test_help_documents_the_command(capsys):
    from experiments.commands.cli import main

    with pytest.raises(SystemExit):
        main(["ablation", "--help"])
    text = capsys.readouterr().out
    assert "--smoke" in text and "rewind ablation --out" in text and "--seeds" in text


@pytest.mark.slow
def test_smoke_ablation_end_to_end(tmp_path):
    out = tmp_path / "ab"
    text = run_ablation(AblationConfig(out=str(out), smoke=True), progress=False)
    for mode in ("clean", "naive", "masked", "hard", "hard+dpo", "hard+onpolicy", "hard+cont", "clean+cont"):
        assert f"| {mode} |" in text
    rows = [json.loads(line) for path in sorted(out.glob("results-*.jsonl")) for line in path.read_text().splitlines()]
    assert len(rows) == 8 * (8 * 5 + 2) and len({r["config_hash"] for r in rows}) == 1
    cont = json.loads((out / "runs" / "clean_cont-s0" / "policy_run" / "train_config.json").read_text())
    assert cont["mode"] == "clean" and cont["model"].endswith("clean-s0/policy_run")
    assert "## Training" in text and "## Mechanism" in text
    metrics = json.loads((out / "runs" / "hard_dpo-s0" / "policy_run" / "metrics.json").read_text())
    assert metrics["global_step"] <= 3 and "stopped_early" in metrics and "plateau_step" in metrics
    assert all("b_effects" in r["stats"] for r in rows if r["inference"] == "greedy-rewind")
    assert (out / "ablation.png").stat().st_size > 1000 and (out / "budgets.json").exists()
    assert run_ablation(AblationConfig(out=str(out), smoke=True), progress=False) == text  # all reused
    with pytest.raises(ValueError, match="another config"):
        run_ablation(AblationConfig(out=str(out), smoke=True, threshold=0.3), progress=False)


def test_search_cells_prune_at_each_verifiers_calibrated_threshold_by_default():
    from experiments.studies.evaluate import _used_threshold

    assert AblationConfig(out="x").threshold is None
    with pytest.raises(ValueError, match="threshold"):
        AblationConfig(out="x", threshold=1.5)

    class Calibrated:
        default_threshold = 0.85

    assert _used_threshold(None, Calibrated(), {}) == 0.85  # what search.solve_many prunes at
    assert _used_threshold(None, None, {}) == 0.5  # P(⟨b⟩) cells: no verifier, the search default
    assert _used_threshold(0.3, Calibrated(), {}) == 0.3
    assert _used_threshold(None, Calibrated(), {"threshold": 0.7}) == 0.7


def test_a_copied_ablation_folder_reports_the_same_config():
    """The folder locates a run, it does not configure it: committed raw results regenerate the tables."""
    from experiments.inputs import config_hash
    from experiments.studies.ablation import NOT_HASHED

    a, b = AblationConfig(out="runs/x"), AblationConfig(out="experiments/results/x")
    assert config_hash(a, ignore=NOT_HASHED) == config_hash(b, ignore=NOT_HASHED)
    assert config_hash(a, ignore=NOT_HASHED) != config_hash(AblationConfig(out="runs/x", n=7), ignore=NOT_HASHED)


def test_delta_is_paired_when_one_cell_has_a_seed_the_baseline_lacks():
    """hard has seeds 0 and 1, clean only seed 0: Δ and McNemar use seed 0's pairs only, and a
    half-evaluated seed is marked partial."""
    rows = (_rows("clean", "greedy-rewind", {0: [0, 0, 1, 0]})
            + _rows("hard", "greedy-rewind", {0: [1, 0, 1, 0], 1: [1, 1, 1]}))
    cells = cells_of(rows)
    assert cells["hard", "greedy-rewind"].accuracy == 5 / 7  # pooled over both seeds
    text = "\n".join(table_lines(cells, ["clean", "hard"], ["greedy-rewind"], expected=4))
    assert "Δ +0.250, p=1.000 (1:0) on the 4 shared" in text  # not 5/7 - 1/4
    assert "(partial: seed 1: 3/4)" in text
    assert "partial" not in text.splitlines()[2]  # clean's one seed is complete


def test_cont_controls_continue_their_base_on_its_data_at_the_on_policy_rate(tmp_path):
    """hard+cont / clean+cont: same mode and data as their base, started from its trained policy, at
    the on-policy round's learning rate, and nothing harvested: the control that isolates the
    on-policy data from the lower rate."""
    cfg = AblationConfig(out=str(tmp_path), seeds="0,1")
    onpolicy = _train_config(cfg, tmp_path, "hard+onpolicy", 1)
    for mode, base in (("hard+cont", "hard"), ("clean+cont", "clean")):
        tc = _train_config(cfg, tmp_path, mode, 1)
        assert tc.mode == base and tc.model == str(run_dir(tmp_path, base, 1) / "policy_run")
        assert tc.lr == onpolicy.lr == 1e-3 and tc.harvest_from is None and tc.init is None
        assert tc.num_problems == onpolicy.num_problems and tc.seed == 1
    with pytest.raises(ValueError, match=r"clean\+cont:1 starts from the clean policy of seed 1.*--only clean:1"):
        check_dependencies(cfg, tmp_path, [("hard", 1), ("clean+cont", 1)])
    check_dependencies(cfg, tmp_path, [("clean", 1), ("clean+cont", 1)])
    assert order_cells([("clean+cont", 0), ("clean", 0), ("hard", 0)]) == [("hard", 0), ("clean", 0),
                                                                           ("clean+cont", 0)]


def test_adding_modes_or_seeds_keeps_the_config_hash():
    """Rows name their mode and seed, so the cells chosen are not hashed: extending a finished
    ablation with a mode or a seed keeps its results."""
    from experiments.inputs import config_hash
    from experiments.studies.ablation import NOT_HASHED

    a = AblationConfig(out="x", modes="clean,hard", seeds="0")
    b = AblationConfig(out="y", modes="clean,hard,hard+cont", seeds="0,1")
    assert config_hash(a, ignore=NOT_HASHED) == config_hash(b, ignore=NOT_HASHED)
    assert config_hash(a, ignore=NOT_HASHED) != config_hash(AblationConfig(out="x", modes="clean,hard", n=499),
                                                            ignore=NOT_HASHED)


def test_contrast_lines_compare_follow_ups_with_their_controls():
    from experiments.studies.ablation_report import contrast_lines

    rows = (_rows("hard+cont", "greedy-rewind", {0: [1, 1, 1, 0]})
            + _rows("hard+onpolicy", "greedy-rewind", {0: [1, 0, 0, 0]})
            + _rows("clean+cont", "greedy-rewind", {0: [1, 1, 0, 0]}))
    text = "\n".join(contrast_lines(cells_of(rows), ["greedy-rewind"]))
    assert "| hard+onpolicy vs hard+cont | Δ -0.500, p=0.500 (0:2, n=4) |" in text
    assert "| hard+cont vs clean+cont | Δ +0.250, p=1.000 (1:0, n=4) |" in text
    assert "hard+dpo" not in text  # not evaluated: no row
    assert contrast_lines(cells_of(_rows("clean", "greedy-rewind", {0: [1]})), ["greedy-rewind"]) == []


def test_search_lines_compare_each_method_with_greedy_of_the_same_mode():
    from experiments.studies.ablation_report import search_lines

    rows = (_rows("hard", "greedy-rewind", {0: [1, 0, 0, 0], 1: [1, 1, 0, 0]})
            + _rows("hard", "beam+verifier", {0: [1, 1, 1, 0], 1: [1, 1, 0, 0]})
            + _rows("clean", "greedy-rewind", {0: [1, 1]}))
    inference = ["greedy-rewind", "beam+verifier"]
    text = "\n".join(search_lines(cells_of(rows), ["clean", "hard"], inference))
    assert "| hard | Δ +0.250, p=0.500 (2:0, n=8) |" in text
    assert "| clean |" not in text  # no search cell for clean: no row
    assert search_lines(cells_of(_rows("clean", "greedy-rewind", {0: [1]})), ["clean"], ["greedy-rewind"]) == []


def test_no_backtrack_study_compares_the_same_policy_with_and_without_its_backtracks():
    from experiments.studies.no_backtrack import NoBacktrackConfig, compare

    allowed = {("0", "a"): True, ("0", "b"): False, ("0", "c"): False, ("0", "d"): True}
    forbidden = {("0", "a"): True, ("0", "b"): True, ("0", "c"): True, ("0", "e"): False}
    # shared keys a, b, c: allowed 1/3 right, forbidden 3/3; only forbidden right on b and c
    assert compare(allowed, forbidden) == "33.3% → 100.0%, Δ +66.7, p = 0.50 (2:0, n=3)"
    assert compare(allowed, {}) == "–"
    with pytest.raises(ValueError, match="required"):
        NoBacktrackConfig(ablation="x")


def test_majority_vote_study_summarises_paired_against_clean_and_the_weighted_vote(tmp_path, capsys):
    import json

    from experiments.studies.majority_vote import MajorityVoteConfig, main

    abl, out = tmp_path / "abl", tmp_path / "maj"
    abl.mkdir()
    out.mkdir()
    (abl / "config.json").write_text(json.dumps({"config": {"n": 4, "search_knobs": None}}))
    (abl / "budgets.json").write_text(json.dumps({"best_of_n": {"n": 8}}))
    ids = [f"p{i}" for i in range(4)]
    right = {("clean", "best-of-n"): [1, 1, 0, 0], ("clean", "maj"): [1, 0, 0, 0],
             ("hard", "best-of-n"): [1, 1, 1, 0], ("hard", "maj"): [1, 1, 1, 1]}
    for mode in ("clean", "hard"):
        with open(abl / f"results-{mode}-s0.jsonl", "w") as f:
            for pid, c in zip(ids, right[mode, "best-of-n"]):
                f.write(json.dumps({"tag": f"{mode}|s0|best-of-n", "problem_id": pid, "correct": bool(c),
                                    "inference": "best-of-n", "mode": mode, "seed": 0}) + "\n")
        with open(out / f"results-{mode}-s0.jsonl", "w") as f:  # drawn already: no policy is loaded
            for pid, c in zip(ids, right[mode, "maj"]):
                f.write(json.dumps({"tag": f"{mode}|s0|best-of-n-majority", "problem_id": pid, "correct": bool(c),
                                    "inference": "best-of-n-majority", "mode": mode, "seed": 0}) + "\n")
    assert main(["--ablation", str(abl), "--out", str(out)]) == 0
    table = (out / "summary.md").read_text()
    assert "| clean | 0 | 25.0% [" in table and "| – | 50.0% | Δ -25.0, p = 1.00 |" in table
    # hard: majority 4/4 vs clean's 1/4 (3 discordant, p = 0.25); vs its own weighted vote 3/4
    assert "| hard | 0 | 100.0% [" in table and "| Δ +75.0, p = 0.25 | 75.0% | Δ +25.0, p = 1.00 |" in table
    with pytest.raises(ValueError, match="not evaluated by the ablation"):
        main(["--ablation", str(abl), "--out", str(out), "--only", "masked:0"])
    with pytest.raises(ValueError, match="required"):
        MajorityVoteConfig(out="x")
