"""``rewind diagnose``: its pure pieces (pass@k, error taxonomy, twins) and its bad inputs."""

import random

import pytest

from experiments.commands.cli import main
from experiments.studies.diagnose import DiagnoseConfig, error_taxonomy, pass_at_k
from policy.model import tiny_policy
from verifier.step_data import _counterfactual_text


def test_pass_at_k_matches_the_closed_form():
    assert pass_at_k(16, 0, 4) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 * 2) / (4 * 3))  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(16, 13, 4) == 1.0  # fewer than k wrong samples


REF = "Ann has <<3*4=12>>12 pens.\nShe gives <<12-5=7>>7.\n#### 7"


@pytest.mark.parametrize("text, kind", [
    ("Ann has <<3*4=13>>13 pens.\nShe gives <<13-5=8>>8.\n#### 8", "result"),
    ("Ann has <<3+4=7>>7 pens.\nShe gives <<7-5=2>>2.\n#### 2", "operator"),
    ("Ann has <<3*5=15>>15 pens.\nShe gives <<15-5=10>>10.\n#### 10", "operand"),
    ("Ann has 12 pens.\n#### 12", "format"),
    ("Ann has <<3*4=12>>12 pens.\nShe gives <<12-5=7>>7.\n#### 8", "answer"),
])
def test_error_taxonomy(text, kind):
    assert error_taxonomy(text, REF) == kind


def test_counterfactual_twins_flip_the_result_and_nothing_else():
    rng = random.Random(0)
    wrong = _counterfactual_text("Ann has <<3*4=12>>12 pens.\n", 0, "ok", rng)
    assert wrong is not None and wrong != "Ann has <<3*4=12>>12 pens.\n"
    head, tail = wrong.split("<<3*4=")
    c = tail.split(">>")[0]
    assert head == "Ann has " and c != "12" and tail == f"{c}>>{c} pens.\n"
    assert _counterfactual_text("Ann has <<3*4=13>>13 pens.\n", 1, "result", rng) == "Ann has <<3*4=12>>12 pens.\n"
    assert _counterfactual_text("No annotation.\n", 0, "ok", rng) is None
    assert _counterfactual_text("Ann has <<3*9=27>>27.\n", 1, "operand", rng) is None  # not a result error


def test_config_refuses_bad_values_before_any_work():
    for bad in ({"n": 0}, {"temperatures": "hot"}, {"temperatures": "5"}, {"thresholds": "2"}, {"aggregate": "mean"}):
        with pytest.raises(ValueError):
            DiagnoseConfig(run="x", **bad)


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nope")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["diagnose", str(empty)]) == 2
    no_verifier = tmp_path / "run"
    tiny_policy().save(no_verifier / "policy")
    assert main(["diagnose", str(no_verifier), "--n", "2"]) == 2
    assert "no verifier" in capsys.readouterr().err
    assert main(["diagnose", str(no_verifier), "--n", "0"]) == 2
    assert main(["diagnose", str(no_verifier), "--temperatures", "0.4,warm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("rewind diagnose: error:") for line in err)


def test_pruning_savings_picks_the_largest_cut_within_one_point():
    from experiments.studies.diagnose import pruning_savings

    m = lambda acc, tok: {"accuracy": acc, "tokens_generated": tok}  # noqa: E731
    methods = {"beam verifier": m(0.40, 800.0), "beam verifier τ=0.5 keep-last": m(0.30, 400.0),
               "beam verifier τ=0.8 keep-last": m(0.395, 600.0), "beam verifier τ=0.9 keep-last": m(0.40, 700.0),
               "vote@8 verifier": m(0.39, 700.0), "vote@8 verifier τ=0.9": m(0.37, 500.0),
               "beam oracle": m(0.50, 800.0), "beam oracle τ=0.5 keep-last": m(0.48, 600.0),
               "beam verifier lazy accept=0.5": m(0.35, 300.0), "beam verifier lazy accept=0.9": m(0.405, 480.0)}
    found = pruning_savings(methods)
    got = {p["search"]: p["best"] for p in found}
    assert got["beam verifier"]["threshold"] == 0.8
    assert abs(got["beam verifier"]["token_cut"] - 0.25) < 1e-9
    assert got["vote@8 verifier"] is None  # 2 points lost: no threshold qualifies
    assert got["beam verifier lazy"]["threshold"] == 0.9 and abs(got["beam verifier lazy"]["token_cut"] - 0.4) < 1e-9
    assert len({p["search"]: p["rows"] for p in found}["beam verifier"]) == 3  # the lazy rows are not its τ rows
    oracle = {p["search"]: p["rows"] for p in found}["beam oracle"]
    assert oracle == [{"threshold": 0.5, "token_cut": 0.25, "accuracy_change": oracle[0]["accuracy_change"]}]
    assert abs(oracle[0]["accuracy_change"] + 0.02) < 1e-9
    from experiments.studies.diagnose import limits_text

    text = limits_text({"methods": {**methods, "greedy": m(0.3, 90.0), "beam logprob": m(0.3, 800.0)},
                        "sampling": {"0.4": {"pass_at_k": {"4": 0.5}}}, "siblings": {}, "greedy_error_taxonomy": {},
                        "pruning": found})
    assert "A perfect step pruner (the checker as oracle, τ = 0.5) cuts 25%" in text and "-2.0 points" in text
    assert "at accept = 0.9 cut 40% of generated tokens at +0.5 points" in text


def test_misordered_by_operator_files_each_pair_under_the_right_steps_operator():
    from experiments.studies.diagnose import misordered_by_operator
    from verifier.step_data import StepData
    from verifier.step_train import sibling_auroc

    d = StepData()
    rows = [  # (group, label, text, score)
        (0, 0, "Now he has <<9+4=13>>13 pens.", 0.5), (0, 1, "Now he has <<9+4=11>>11 pens.", 0.4),  # misordered
        (0, 1, "Now he has <<9+4=14>>14 pens.", 0.9),
        (1, 0, "That is <<2*5=10>>10 cakes.", 0.2), (1, 1, "That is <<2*5=12>>12 cakes.", 0.2),  # a tie: half
        (2, 0, "So <<8-3+1=6>>6 left.", 0.1), (2, 1, "So <<8-3+1=7>>7 left.", 0.8),
        (3, 1, "Now <<1+1=3>>3.", 0.9),  # a group without a right step: no pair
    ]
    for g, y, text, _ in rows:
        d.groups.append(g)
        d.labels.append(y)
        d.texts.append(text)
    scores = [s for *_, s in rows]
    got = misordered_by_operator(scores, d)
    assert got == {"+": {"pairs": 2, "misordered": 0.5}, "*": {"pairs": 1, "misordered": 0.5},
                   "-+": {"pairs": 1, "misordered": 0.0}}
    pairs = sum(m["pairs"] for m in got.values())
    share = sum(m["pairs"] * m["misordered"] for m in got.values()) / pairs
    assert sibling_auroc(scores, d.labels, d.groups)["auroc"] == pytest.approx(1 - share)


def test_rewrite_rows_are_reported_beside_their_plain_beams():
    from experiments.studies.diagnose import limits_text

    m = lambda acc, tok: {"accuracy": acc, "tokens_generated": tok}  # noqa: E731
    methods = {"greedy": m(0.25, 90.0), "beam verifier": m(0.34, 800.0), "beam logprob": m(0.25, 800.0),
               "beam oracle": m(0.45, 800.0), "beam verifier rewrite=4": m(0.33, 1000.0),
               "beam oracle rewrite=4": m(0.52, 1200.0)}
    text = limits_text({"methods": methods, "sampling": {"0.4": {"pass_at_k": {"4": 0.5}}}, "siblings": {},
                        "greedy_error_taxonomy": {}, "pruning": []})
    assert ("take the oracle beam from 45.0% to 52.0% (+50% tokens) and the verifier beam from 34.0% to 33.0% "
            "(+25% tokens)") in text
    assert "Rewrites" not in limits_text({"methods": {k: v for k, v in methods.items() if "rewrite" not in k},
                                          "sampling": {"0.4": {"pass_at_k": {"4": 0.5}}}, "siblings": {},
                                          "greedy_error_taxonomy": {}, "pruning": []})
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="rewrite"):
            DiagnoseConfig(run="x", rewrite=bad)


def test_rewrite_beam_is_compared_with_the_vote_that_spends_its_tokens():
    from experiments.studies.diagnose import limits_text, matched_vote_name, pruning_savings, rewrite_beams

    m = lambda acc, tok: {"accuracy": acc, "tokens_generated": tok}  # noqa: E731
    methods = {"greedy": m(0.25, 90.0), "vote@8 majority": m(0.26, 800.0), "beam verifier": m(0.34, 800.0),
               "beam logprob": m(0.25, 800.0), "beam oracle": m(0.45, 800.0),
               "beam verifier lazy accept=0.8": m(0.36, 500.0),
               "beam verifier rewrite=2": m(0.40, 1060.0), "beam oracle rewrite=2": m(0.55, 1000.0),
               "beam verifier lazy accept=0.8 rewrite=2": m(0.30, 780.0),
               "vote@11 majority": m(0.27, 1100.0)}
    assert rewrite_beams(methods) == ["beam verifier rewrite=2", "beam verifier lazy accept=0.8 rewrite=2"]
    assert matched_vote_name(methods, "beam verifier rewrite=2") == "vote@11 majority"  # 1060 / (800 / 8) = 10.6
    assert matched_vote_name(methods, "beam verifier lazy accept=0.8 rewrite=2") == "vote@8 majority"  # 7.8 -> 8
    assert matched_vote_name({**methods, "beam verifier rewrite=2": m(0.4, 500.0)},
                             "beam verifier rewrite=2") == "vote@8 majority"  # never fewer samples than vote@8
    text = limits_text({"methods": methods, "sampling": {"0.4": {"pass_at_k": {"4": 0.5}}}, "siblings": {},
                        "greedy_error_taxonomy": {}, "pruning": []})
    assert ("'beam verifier rewrite=2' reaches 40.0% at 1060 tokens: +15.0 points over greedy and +13.0 over the "
            "majority vote that spends its tokens (vote@11 majority, 27.0%)") in text
    assert ("'beam verifier lazy accept=0.8 rewrite=2' reaches 30.0% at 780 tokens: +5.0 points over greedy and "
            "+4.0 over the majority vote that spends its tokens (vote@8 majority, 26.0%)") in text
    use = {"beam verifier rewrite=2": {"n": 200, "right_parents": 900, "all_wrong": 300, "fired": 320,
                                       "fired_all_wrong": 270, "missed": 30, "right_drawn": 90, "right_kept": 40},
           "beam oracle rewrite=2": {"n": 200, "right_parents": 1000, "all_wrong": 330, "fired": 330,
                                     "fired_all_wrong": 330, "missed": 0, "right_drawn": 110, "right_kept": 100}}
    text = limits_text({"methods": methods, "sampling": {"0.4": {"pass_at_k": {"4": 0.5}}}, "siblings": {},
                        "greedy_error_taxonomy": {}, "pruning": [], "rewrite_use": use})
    assert ("drawn children were all wrong 300 times: it fired rewrites in 270 of them (missed 30; 50 more firings "
            "beside a right child); of its 320 firings, 90 drew a right rewrite and the ranking kept 40 of those "
            "(the oracle beam: 110 drawn of 330 firings, 100 kept).") in text
    # the lazy beam with rewrites is not read as a pruned form of the lazy beam
    lazy = [p for p in pruning_savings(methods) if p["search"] == "beam verifier lazy"][0]
    assert [r["threshold"] for r in lazy["rows"]] == [0.8] and lazy["rows"][0]["accuracy_change"] == pytest.approx(0.02)
