"""CLI exit codes (issue 11 §7): every registered subcommand answers a user error with exit 2 and
one line on stderr, no traceback; ``--debug`` shows the traceback instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from experiments.commands.cli import COMMANDS, main

# one user error per subcommand, caught before any long work
USER_ERRORS = {
    "demo": (["--out", "{tmp}/d", "--seed", "-1", "--quick"], "seed must be in [0, 2**32)"),
    "data": (["--kind", "sft", "--n", "0", "--out", "{tmp}/data"], "--n must be >= 1"),
    "train-policy": (["--out", "{tmp}/tp", "--lr", "-1"], "lr must be > 0"),
    "solve": (["Q?", "--policy", "{tmp}/missing"], "does not exist"),
    "train-verifier": (["--out", "{tmp}/tv", "--policy", "{tmp}/missing"], "does not exist"),
    "bench": (["--smoke", "--only", "nonsense", "--out", "{tmp}/b"], "unknown benchmark row 'nonsense'"),
    "generate": (["Q?", "--policy", "{tmp}/missing"], "does not exist"),
    "export": (["{tmp}/missing.json", "{tmp}/out.html"], "does not exist"),
    "eval": (["--out", "{tmp}/e", "--run", "{tmp}/missing", "--n", "2"], "does not exist"),
    "sweep": (["--out", "{tmp}/s", "--run", "{tmp}/missing"], "does not exist"),
    "ablation": (["--out", "{tmp}/a", "--modes", "nonsense"], "unknown training mode"),
    "diagnose": (["{tmp}/missing", "--out", "{tmp}/dg"], "missing"),
}


def _argv(name: str, tmp_path) -> list[str]:
    return [name] + [a.replace("{tmp}", str(tmp_path)) for a in USER_ERRORS[name][0]]


def test_every_command_has_a_user_error_case():
    assert set(USER_ERRORS) == set(COMMANDS), "add a user-error case for the new subcommand"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_user_error_is_one_line_and_exit_2(name, tmp_path, capsys):
    assert main(_argv(name, tmp_path)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress bars may come before it
    assert last.startswith(f"rewind {name}: error: ") and USER_ERRORS[name][1] in last, err[-500:]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_debug_shows_the_exception(name, tmp_path, capsys):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        main(["--debug", *_argv(name, tmp_path)])
    assert USER_ERRORS[name][1] in str(info.value)


def _rewind(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "experiments.commands.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=300)


def test_real_process_exit_codes(tmp_path):
    """The installed entry point: exit 2 and one stderr line; --debug prints the traceback; --help is 0;
    argparse's own errors (a bad flag value) are exit 2 too."""
    bad = _rewind("export", str(tmp_path / "missing.json"), str(tmp_path / "o.html"))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"rewind export: error: {tmp_path / 'missing.json'} does not exist"] \
        or (len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr)
    debug = _rewind("--debug", "export", str(tmp_path / "missing.json"), str(tmp_path / "o.html"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "does not exist" in debug.stderr
    assert _rewind("--help").returncode == 0
    flag = _rewind("solve", "Q?", "--width", "two")
    assert flag.returncode == 2 and "invalid int value: 'two'" in flag.stderr and "Traceback" not in flag.stderr


def test_an_internal_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only deliberate user errors become one line: a KeyError is a bug, and propagates."""
    from experiments.commands import export

    def broken(args):
        raise KeyError("an internal lookup")

    monkeypatch.setattr(export, "run", broken)
    with pytest.raises(KeyError, match="an internal lookup"):
        main(["export", "a.json", "b.html"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_renders(command, capsys):
    """``rewind COMMAND --help`` prints its flags and exits 0 — argparse %-formats each help text, so
    a knob whose help holds a bare "%" (e.g. "31.5% / 32.0%") once made ``train-verifier --help`` crash."""
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: rewind" in capsys.readouterr().out
