"""``rewind generate`` prints the raw trace with ⟨b⟩ visible and the final text."""

import json

from test_generate import lively_policy

from experiments.commands.cli import main


def test_generate_cli_prints_trace_and_text(tmp_path, capsys):
    p = lively_policy(seed=1)
    p.save(tmp_path / "pol")
    assert main(["generate", "--policy", str(tmp_path / "pol"), "What is 2+3?", "--max-new-tokens", "20",
                 "--do-sample", "--seed", "3", "--backtrack-bias", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backtracks"], "the bias should make the policy rewind"
    assert "<|backtrack|>" in data["raw_text"] and "<|backtrack|>" not in data["text"]
    assert main(["generate", "--policy", str(tmp_path / "pol"), "What is 2+3?", "--max-new-tokens", "20",
                 "--do-sample", "--seed", "3", "--backtrack-bias", "4"]) == 0
    out = capsys.readouterr().out
    assert "⌫" in out and "final text" in out


def test_generate_cli_user_errors(tmp_path, capsys):
    assert main(["generate", "--policy", str(tmp_path / "missing"), "q"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    lively_policy().save(tmp_path / "pol")
    assert main(["generate", "--policy", str(tmp_path / "pol"), "   "]) == 2
