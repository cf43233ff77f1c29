"""``rewind demo --quick`` end to end: every stage, every artifact, reuse, refusal, default run."""

import json
import re

import pytest
import torch

from experiments.commands.cli import main
from experiments.studies.evaluate import read_results


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REWIND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REWIND_RUN", raising=False)
    return tmp_path


def test_demo_quick_end_to_end(home, capsys):
    run = home / "demo"
    assert main(["demo", "--quick", "--out", str(run)]) == 0
    for stage in ("policy", "verifier", "solve", "sweep", "diagnose", "report"):
        assert json.loads((run / "stages" / f"{stage}.json").read_text())["stage"] == stage
    rows = read_results(run / "results.jsonl")
    methods = {r["method"] for r in rows}
    assert methods == {"decode", "greedy", "best_of_n", "beam", "mcts"}
    assert len(rows) == 5 * 6 and len({(r["tag"], r["problem_id"]) for r in rows}) == len(rows)
    assert (run / "train" / "policy" / "config.json").exists()
    assert (run / "verifier_train" / "verifier" / "verifier_config.json").exists()
    vcfg = json.loads((run / "verifier_train" / "config.json").read_text())  # the demo's verifier knobs reach training
    assert (vcfg["epochs"], vcfg["reference_problems"], vcfg["token_head_problems"]) == (3, 24, 60)
    assert (run / "verifier_train" / "token_head" / "verifier_config.json").exists()
    saved = json.loads((run / "verifier_train" / "verifier" / "verifier_config.json").read_text())
    assert saved["kind"] == "step-ensemble" and saved["members"] == 2  # the feature head and the token head
    assert len(json.loads((run / "verifier_train" / "metrics.json").read_text())["history"]) <= 3
    assert (run / "plots" / "accuracy_by_method.png").stat().st_size > 1000
    assert (run / "sweep" / "accuracy_vs_threshold.png").exists()
    htmls = list((run / "trees").glob("*.html"))
    assert len(htmls) == 4
    for h in htmls:  # each page embeds its whole tree (the viewer draws it from this data)
        data = re.search(r'<script type="application/json" id="tree-data">(.*?)</script>', h.read_text(), re.S)
        tree = json.loads(h.with_suffix(".json").read_text())
        shown = json.loads(data.group(1))["tree"]["nodes"] if data else []
        assert [(n["parent"], n["text"]) for n in shown] == [(n["parent"], n["text"]) for n in tree["nodes"]]
        assert len(tree["nodes"]) > 1
    summary = (run / "summary.md").read_text()
    assert "| greedy decoding (rewind) |" in summary and "sibling AUROC" in summary and "threshold" in summary.lower()
    diag = json.loads((run / "diagnose" / "diagnose.json").read_text())
    assert {"greedy", "beam verifier", "beam oracle", "beam random", "vote@8 majority"} <= set(diag["methods"])
    assert diag["n"] == 3 and diag["limits"] and "## Diagnose" in summary
    pruned = sorted(k for k in diag["methods"] if "τ=" in k and "oracle" not in k)  # the diagnose grid, not the sweep's
    assert pruned == ["beam verifier τ=0.3 keep-last", "vote@8 verifier τ=0.3"], pruned
    assert [k for k in diag["methods"] if "lazy" in k] == ["beam verifier lazy accept=0.3"]  # the same grid as accept
    assert (run / "diagnose" / "diagnose.png").stat().st_size > 1000
    # its pass@k samples came from a second process (workers=2, the default; both processes at one
    # thread): one process at one thread measures the same, to the bit
    from experiments.studies.diagnose import DiagnoseConfig, run_diagnose

    assert diag["config"]["workers"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = run_diagnose(DiagnoseConfig(**{**diag["config"], "out": str(run / "diagnose-1"), "workers": 1}),
                             log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert again["sampling"] == diag["sampling"] and again["methods"] == diag["methods"]
    assert again["greedy_error_taxonomy"] == diag["greedy_error_taxonomy"]
    # rewrites, plain and with lazy siblings, each beside greedy and the majority vote at its tokens
    rw = run_diagnose(DiagnoseConfig(**{**diag["config"], "out": str(run / "diagnose-rw"), "workers": 1, "n": 2,
                                        "rewrite": 1, "accepts": "0.3"}), log=lambda *_: None)
    rows_rw = rw["methods"]
    beams = ["beam verifier rewrite=1", "beam verifier lazy accept=0.3 rewrite=1"]
    assert set(beams) | {"beam oracle rewrite=1", "beam verifier lazy accept=0.3"} <= set(rows_rw)
    per = rows_rw["vote@8 majority"]["tokens_generated"] / 8
    for b in beams:
        vote = f"vote@{max(8, round(rows_rw[b]['tokens_generated'] / per))} majority"
        assert vote in rows_rw and rows_rw[vote]["n"] == 2
        assert {(b, "greedy"), (b, vote)} <= {(p["a"], p["b"]) for p in rw["paired"]}
    assert set(rw["rewrite_use"]) == set(beams) | {"beam oracle rewrite=1"}  # read from each one's trees
    assert all(u["n"] == 2 and u["fired"] >= u["right_drawn"] >= u["right_kept"] for u in rw["rewrite_use"].values())
    # the run became the default: search.solve with no policy loads it
    import search

    sol = search.solve("Ann has 3 pens. She buys 4 more pens. How many pens does Ann have now?",
                       strategy="beam", width=1, samples=1, max_depth=2, max_step_tokens=20)
    assert sol.tree.nodes[0].text.startswith("Question: Ann has 3 pens.") and sol.stats["nodes_expanded"] >= 1
    capsys.readouterr()
    # a rerun reuses every stage and writes nothing twice
    assert main(["demo", "--quick", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("done before, reused") == 6
    assert len(read_results(run / "results.jsonl")) == len(rows)
    # another configuration into the same folder is refused, naming what differs
    assert main(["demo", "--quick", "--out", str(run), "--seed", "3"]) == 2
    assert "seed" in capsys.readouterr().err
    # the verifier-budget study retrains the run's verifier on its own labels and solves with each
    from experiments.studies import verifier_budget

    assert verifier_budget.main(["--run", str(run), "--epochs", "1", "--reference-problems", "0", "--n", "2",
                                 "--skip", "12", "--dropouts", "0.2", "--heads", "1,2", "--member-beams"]) == 0
    table = (run / "verifier_budget" / "summary.md").read_text()
    assert "| the run's own verifier: e3-r24-s0 |" in table and "| e1-r0-s0-d0.2 |" in table
    assert "| e1-r0-s0-d0.2-h2 |" in table  # a two-head ensemble on the same labels, and its head 1 alone
    assert "| e1-r0-s0-d0.2-h2, head 1 alone |" in table
    ens = json.loads((run / "verifier_budget" / "e1-r0-s0-d0.2-h2" / "metrics.json").read_text())
    assert ens["heads"] == 2 and len(ens["member_tests"]) == 3  # the two heads' mean, head 0, head 1 ...
    assert set(ens["token_head"]) == {"weights", "token_head_test", "feature_head_test"}  # ... beside the token head
    m = json.loads((run / "verifier_budget" / "e1-r0-s0-d0.2" / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and m["train_s"] > 0
    own = json.loads((run / "verifier_train" / "metrics.json").read_text())
    assert m["n_steps"]["train"] < own["n_steps"]["train"] and m["n_steps"]["test"] == own["n_steps"]["test"]
    assert not (run / "verifier_budget" / "e1-r0-s0-d0.2" / "reference_steps.pt").exists()
    saved = json.loads((run / "verifier_budget" / "e1-r0-s0-d0.2" / "verifier" / "member-0" / "verifier_config.json")
                       .read_text())
    assert saved["dropout"] == 0.2  # the dropout asked for is the one the (feature) head trained with
    tags = {r["tag"] for r in read_results(run / "verifier_budget" / "results.jsonl")}
    assert {"greedy", "e1-r0-s0-d0.2 τ=1", "e1-r0-s0-d0.2-h2 τ=1", "e1-r0-s0-d0.2-h2 head 1 τ=1"} <= tags
    # the run's verifier and every retrained one is a mixture with the token head: each member beam once more
    assert "| e1-r0-s0-d0.2-h2, the token head alone |" in table and "e1-r0-s0-d0.2-h2 head 2 τ=1" in tags
    assert len(tags) == 11


@pytest.mark.parametrize("argv", [["--split", "train"], ["--epochs", "0"], ["--reference-problems", "x"],
                                  ["--dropouts", "1.5"], ["--dropouts", "x"], ["--heads", "0"]])
def test_verifier_budget_refuses_bad_flags(argv, tmp_path):
    from experiments.studies import verifier_budget

    with pytest.raises((SystemExit, ValueError)):
        verifier_budget.main(["--run", str(tmp_path), *argv])


def test_solve_without_a_default_run_says_which_command_makes_one(home):
    import search

    with pytest.raises(FileNotFoundError, match="rewind demo"):
        search.solve("What is 2 plus 2?")


def test_solve_stage_threshold_is_the_flag_else_the_verifiers_calibrated_one():
    from types import SimpleNamespace

    from experiments.studies.demo import DemoConfig
    from experiments.studies.demo_stages import solve_threshold

    calibrated = SimpleNamespace(default_threshold=0.85)
    assert solve_threshold(DemoConfig(out="x"), calibrated) == 0.85
    assert solve_threshold(DemoConfig(out="x", threshold=0.3), calibrated) == 0.3
    assert solve_threshold(DemoConfig(out="x"), SimpleNamespace(default_threshold=None)) == 0.5
    with pytest.raises(ValueError):
        DemoConfig(out="x", threshold=1.5)


def test_a_stage_runs_in_a_fresh_process_and_its_error_reaches_the_caller(tmp_path, monkeypatch):
    from experiments.studies import demo_stages
    from experiments.studies.demo import DemoConfig, isolated

    run = tmp_path / "empty"
    run.mkdir()
    cfg = DemoConfig(out=str(run), quick=True).resolved()
    with pytest.raises(Exception) as here:
        demo_stages.solve(cfg, run)
    # the child imports demo_stages afresh: a patch in this process does not reach it
    monkeypatch.setattr(demo_stages, "solve", lambda *_: {"patched": True})
    with pytest.raises(type(here.value), match=re.escape(str(here.value))):
        isolated("solve", cfg, run)


def test_demo_precision_resolves_auto_on_this_machine(monkeypatch):
    from experiments.studies import demo_stages
    from experiments.studies.demo import DemoConfig

    assert demo_stages.training_precision(DemoConfig(out="x")) == "fp32"  # the default, whatever the machine
    monkeypatch.setattr(demo_stages, "native_bf16", lambda: True)
    assert demo_stages.training_precision(DemoConfig(out="x", precision="auto")) == "bf16"
    assert demo_stages.training_precision(DemoConfig(out="x")) == "fp32"
    monkeypatch.setattr(demo_stages, "native_bf16", lambda: False)
    assert demo_stages.training_precision(DemoConfig(out="x", precision="auto")) == "fp32"
    assert demo_stages.training_precision(DemoConfig(out="x", precision="bf16")) == "bf16"
    # the verifier's own knob: auto by default, resolved on its own
    assert demo_stages.training_precision(DemoConfig(out="x"), "verifier") == "fp32"
    assert demo_stages.training_precision(DemoConfig(out="x", verifier_precision="bf16"), "verifier") == "bf16"
    monkeypatch.setattr(demo_stages, "native_bf16", lambda: True)
    assert demo_stages.training_precision(DemoConfig(out="x"), "verifier") == "bf16"
    assert demo_stages.training_precision(DemoConfig(out="x", verifier_precision="fp32"), "verifier") == "fp32"
    assert demo_stages.training_precision(DemoConfig(out="x"), "policy") == "fp32"


@pytest.mark.parametrize("bad", [{"verifier_epochs": 0}, {"reference_problems": -1}, {"diagnose_thresholds": (0.5, 1.2)},
                                 {"precision": "fp16"}, {"verifier_precision": "half"}, {"verifier_heads": 0},
                                 {"token_head_problems": -1}, {"token_head_steps": 0}])
def test_demo_refuses_bad_verifier_and_diagnose_knobs(bad):
    from experiments.studies.demo import DemoConfig

    with pytest.raises(ValueError):
        DemoConfig(**bad)
