"""Dataset builders, statistics, counted skips, and the ``rewind data`` command."""

import datasets
import pytest
from test_data_inject import char_tok

from experiments.commands.cli import main
from policy.data import Problem, Segment, build_dataset, dataset_stats, generate_problems


def test_sft_dataset_and_stats():
    tok, bt = char_tok()
    problems = generate_problems(30)
    bad = Problem(question="Q?", solution="<<2+2=5>>5\n#### 5", answer="5", id="bad-ref")
    ds = build_dataset("sft", [*problems, bad], tok, seed=1, progress=False, clean_share=0.2)
    stats = dataset_stats(ds)
    assert stats["examples"] == 30 and stats["skipped"] == 1
    assert sum(stats["error_kinds"].values()) == 30
    per_segment = stats["tokens_per_segment"]
    assert sum(per_segment.values()) == sum(len(x) for x in ds["input_ids"])
    assert per_segment["ERROR"] == per_segment["BACKTRACK"] > 0
    row = ds[0]
    assert set(row) == {"input_ids", "segments", "prompt_len", "clean_ids", "problem_id", "error_kind", "error_step"}
    assert len(row["input_ids"]) == len(row["segments"]) and set(row["segments"]) <= set(map(int, Segment))


def test_rows_are_the_examples_fields():
    """The shallow row (no deep copy) holds exactly what ``dataclasses.asdict`` would, for both kinds."""
    from dataclasses import asdict

    from policy.data import dpo_pairs, inject_errors

    tok, _ = char_tok()
    problems = generate_problems(6, seed=3)
    for kind, make, knobs in (("sft", inject_errors, {"clean_share": 0.3}), ("dpo", dpo_pairs, {"horizon": "step"})):
        want = [asdict(r) for p in problems for r in make(p, tok, seed=2, **knobs)]
        ds = build_dataset(kind, problems, tok, seed=2, progress=False, **knobs)
        assert ds.to_list() == [{k: list(v) if isinstance(v, tuple) else v for k, v in w.items()} for w in want]


def test_problems_and_dpo_datasets():
    tok, _ = char_tok()
    problems = generate_problems(20, split="validation")
    ds = build_dataset("problems", problems)
    stats = dataset_stats(ds)
    assert stats["problems"] == 20 and set(stats["steps"]) <= {2, 3}
    assert ds[0]["id"] == problems[0].id
    dpo = build_dataset("dpo", problems, tok, progress=False, horizon="step")
    stats = dataset_stats(dpo)
    assert stats["pairs"]["backtrack"] == 20 and stats["pairs"]["no_backtrack"] > 0


def test_user_errors_are_raised_not_skipped():
    tok, _ = char_tok()
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("rl", [], tok)
    with pytest.raises(ValueError, match="unknown knob"):
        build_dataset("sft", generate_problems(2), tok, rate=1)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        build_dataset("dpo", generate_problems(2))


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["data", "--kind", "sft", "--n", "12", "--span", "step", "--out", str(out)]) == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 12 and '"BACKTRACK"' in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # written atomically
    assert main(["data", "--kind", "problems", "--task", "gsm8k", "--split", "test", "--n", "5",
                 "--out", str(tmp_path / "p")]) == 0
    assert datasets.load_from_disk(str(tmp_path / "p"))[0]["id"] == "gsm8k-test-0"
    assert main(["data", "--kind", "sft", "--clean-share", "2", "--out", str(tmp_path / "x")]) == 2
    assert main(["data", "--kind", "problems", "--span", "step", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
