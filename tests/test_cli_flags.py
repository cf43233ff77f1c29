"""One flag definition per knob: every command's flags are generated from config fields
(``experiments.flags``), with the field's help and default; nothing else writes a knob flag."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
from scripted_engine import ScriptedEngine

import search
from experiments.commands.cli import COMMANDS, build_parser
from experiments.flags import config_fields
from policy.generate import DecodeConfig, generate
from search.config import SearchConfig

ROOT = Path(__file__).resolve().parents[1]
# Flags that are not knobs: what to act on and where output goes (positional or I/O switches).
IO_FLAGS = {
    "solve": {"question", "strategy", "policy", "verifier", "export", "json"},
    "generate": {"question", "policy", "raw_prompt", "json"},
    "train-policy": {"merge"},
    "export": {"source", "out", "index"},
    "diagnose": {"run_folder"},
}


def _actions(name: str) -> list[argparse.Action]:
    parser = build_parser([name])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return [a for a in sub._actions if a.dest not in ("help", "debug")]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_is_a_config_field_with_its_help_and_default(name):
    module = importlib.import_module(COMMANDS[name][0])
    configs = getattr(module, "CONFIGS", ())
    fields = {}
    for cls in configs:
        for f in config_fields(cls):
            fields.setdefault(f.name, f)  # a subclass repeats its base's fields
    allowed = IO_FLAGS.get(name, set())
    seen = set()
    for action in _actions(name):
        assert action.dest not in seen, f"rewind {name}: --{action.dest} defined twice"
        seen.add(action.dest)
        if action.dest in allowed:
            continue
        assert action.dest in fields, f"rewind {name}: --{action.dest} is no field of {[c.__name__ for c in configs]}"
        f = fields[action.dest]
        assert action.help.startswith(f.metadata["help"].replace("%", "%%")), (name, action.dest)  # argparse escaping
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert action.default in (default, None), (name, action.dest, action.default, f.default)
    missing = set(fields) - seen
    assert not missing, f"rewind {name}: config fields without a flag: {sorted(missing)}"
    if name not in IO_FLAGS or name in ("solve", "generate", "train-policy"):
        assert configs, f"rewind {name} names no CONFIGS"


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def test_no_flag_or_field_helper_is_written_by_hand():
    """``add_argument("--x")`` only in the generator or for I/O flags; ``_f``/``field(metadata=help)``
    helpers only in ``search/knobs.py``."""
    io = {f"--{n.replace('_', '-')}" for names in IO_FLAGS.values() for n in names} | {"--debug", "--resume"}
    bad_flags, bad_helpers = [], []
    for pkg in ("policy", "verifier", "search", "experiments"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "_f":
                    bad_helpers.append(rel)
            if rel in ("experiments/flags.py", "experiments/commands/cli.py"):
                continue
            for call in _calls(path):
                if call.func.attr == "add_argument" and call.args and isinstance(call.args[0], ast.Constant):
                    flag = call.args[0].value
                    if flag.startswith("--") and flag not in io:
                        bad_flags.append(f"{rel}: {flag}")
    assert not bad_helpers, f"field helpers defined outside search/knobs.py: {bad_helpers}"
    assert not bad_flags, f"hand-written knob flags: {bad_flags}"


def test_generate_defaults_are_the_decode_config():
    params = inspect.signature(generate).parameters
    for f in dataclasses.fields(DecodeConfig):
        assert params[f.name].default == f.default, f.name


def test_threshold_is_one_knob_everywhere():
    from experiments.studies.ablation import AblationConfig
    from experiments.studies.evaluation import EvalConfig

    ref = next(f for f in dataclasses.fields(SearchConfig) if f.name == "threshold")
    f = next(f for f in dataclasses.fields(EvalConfig) if f.name == "threshold")
    assert (f.default, f.metadata["help"]) == (ref.default, ref.metadata["help"])
    # the ablation leaves it to each cell's verifier, as search.solve does without a threshold
    f = next(f for f in dataclasses.fields(AblationConfig) if f.name == "threshold")
    assert f.default is None and "calibrated" in f.metadata["help"]


def test_engine_knobs_reach_the_engine_from_solve_and_the_cli():
    eng = ScriptedEngine({"*": ["#### 1"]})
    search.solve("Q?", strategy="greedy", policy=eng, backtrack_bias=2.5, max_backtracks_per_step=3)
    assert eng.engine_options == {"backtrack_bias": 2.5, "max_backtracks_per_step": 3}
    with pytest.raises(ValueError, match="max_backtracks_per_step"):
        search.solve("Q?", policy=eng, max_backtracks_per_step=-1)
    flags = {a.dest for a in _actions("solve")}
    assert {"backtrack_bias", "max_backtracks_per_step"} <= flags
