"""Input validation at every public entry point (issue 11 §4): one row per bad input, the error
type and the words the message must hold. The README's bad-input table is this list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import search
from experiments.commands.cli import main
from policy import load_policy, tiny_policy
from policy.data import load_gsm8k
from policy.generate import generate
from search.export import load_tree
from verifier.head import VerifierHead, load_verifier

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
GOOD = '{"question": "Tom has 2 apples.", "answer": "2 apples\\n#### 2"}\n'


@pytest.fixture(scope="module")
def P():
    return tiny_policy(**TINY)


@pytest.fixture(scope="module")
def F(tmp_path_factory, P) -> dict[str, Path]:
    """Bad files on disk, by name."""
    d = tmp_path_factory.mktemp("bad")
    f = {}

    def put(name: str, data: str | bytes) -> Path:
        path = d / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = path
        return path

    put("bad_json.jsonl", GOOD + GOOD + '{"question": "x", "answer": \n')
    put("list_record.jsonl", GOOD + "[1, 2]\n")
    put("no_final.jsonl", GOOD + '{"question": "q", "answer": "no final line"}\n')
    put("int_question.jsonl", '{"question": 5, "answer": "#### 2"}\n')
    put("latin1.jsonl", GOOD.encode() + b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    for name in ("v99", "bad_meta", "truncated", "no_weights"):
        P.save(d / name)
        f[name] = d / name
    meta = d / "v99" / "rewind_policy.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
    (d / "bad_meta" / "rewind_policy.json").write_text("{not json")
    w = d / "truncated" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    (d / "no_weights" / "model.safetensors").unlink()
    (d / "empty_dir").mkdir()
    f["empty_dir"] = d / "empty_dir"
    put("tree_bad.json", '{"schema": "rewind.tree",\n "nodes": [}')
    put("tree_v99.json", json.dumps({"schema": "rewind.tree", "schema_version": 99, "nodes": []}))
    head = VerifierHead(16, width=8)
    head.save(d / "head16")
    f["head16"] = d / "head16"
    head.save(d / "head_v0")
    cfg = d / "head_v0" / "verifier_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "format_version": 0}))
    f["head_v0"] = d / "head_v0"
    f["missing"] = d / "does-not-exist"
    return f


S = dict(max_depth=1, max_step_tokens=4)
CASES = [
    # (entry point, bad input, call, error, message contains)
    ("search.solve", "unknown strategy", lambda P, F: search.solve("Q?", strategy="dfs", policy=P), ValueError,
     "unknown strategy 'dfs'"),
    ("search.solve", "unknown knob", lambda P, F: search.solve("Q?", widht=2, policy=P), ValueError,
     "unknown knob 'widht'"),
    ("search.solve", "threshold out of [0, 1]", lambda P, F: search.solve("Q?", threshold=1.5, policy=P),
     ValueError, "threshold must be a number in [0, 1]"),
    ("search.solve", "threshold a string", lambda P, F: search.solve("Q?", threshold="0.5", policy=P), ValueError,
     "threshold must be a number"),
    ("search.solve", "width 0", lambda P, F: search.solve("Q?", width=0, policy=P), ValueError,
     "width must be an integer >= 1"),
    ("search.solve", "samples 2.5", lambda P, F: search.solve("Q?", samples=2.5, policy=P), ValueError,
     "samples must be an integer >= 1"),
    ("search.solve", "temperature NaN", lambda P, F: search.solve("Q?", temperature=float("nan"), policy=P),
     ValueError, "temperature must be a number"),
    ("search.solve", "top_p 0", lambda P, F: search.solve("Q?", top_p=0, policy=P), ValueError, "top_p must be in"),
    ("search.solve", "seed a string", lambda P, F: search.solve("Q?", seed="x", policy=P), ValueError,
     "seed must be an integer"),
    ("search.solve", "time_limit_s < 0", lambda P, F: search.solve("Q?", time_limit_s=-1, policy=P), ValueError,
     "time_limit_s must be >= 0"),
    ("search.solve", "max_nodes 0", lambda P, F: search.solve("Q?", max_nodes=0, policy=P), ValueError,
     "max_nodes must be an integer >= 1"),
    ("search.solve", "max_kv_bytes 0", lambda P, F: search.solve("Q?", max_kv_bytes=0, policy=P), ValueError,
     "max_kv_bytes must be an integer >= 1"),
    ("search.solve", "c_puct < 0", lambda P, F: search.solve("Q?", strategy="mcts", c_puct=-1, policy=P), ValueError,
     "c_puct must be >= 0"),
    ("search.solve", "question not a string", lambda P, F: search.solve(42, policy=P), ValueError,
     "a problem is a question string"),
    ("search.solve", "empty question", lambda P, F: search.solve("  ", policy=P), ValueError, "question is empty"),
    ("search.solve", "question too long", lambda P, F: search.solve("x" * 5000, policy=P), ValueError,
     "max_question_chars"),
    ("search.solve", "policy not a policy", lambda P, F: search.solve("Q?", policy=42), ValueError,
     "policy must offer .engine"),
    ("search.solve", "policy a missing folder", lambda P, F: search.solve("Q?", policy="./nope/run"),
     FileNotFoundError, "does not exist"),
    ("search.solve", "verifier of another policy (hidden 16 vs 32)",
     lambda P, F: search.solve("Q?", policy=P, verifier=VerifierHead(16, width=8), **S), ValueError,
     "trained for another policy"),
    ("search.solve_many", "one string instead of a list", lambda P, F: search.solve_many("Q?", policy=P),
     ValueError, "takes a list of problems"),
    ("search.solve_many", "None", lambda P, F: search.solve_many(None, policy=P), ValueError,
     "takes a list of problems"),
    ("policy.generate", "not a policy", lambda P, F: generate(None, ["a"]), ValueError, "policy must be a"),
    ("policy.generate", "prompts a string", lambda P, F: generate(P, "a"), ValueError, "list of strings"),
    ("policy.generate", "no prompts", lambda P, F: generate(P, []), ValueError, "prompts is empty"),
    ("policy.generate", "empty prompt", lambda P, F: generate(P, ["ok", ""]), ValueError, "prompt 1 is empty"),
    ("policy.generate", "prompt an int", lambda P, F: generate(P, [1, 2]), ValueError, "prompt 0 is a int"),
    ("policy.generate", "token id outside the vocabulary", lambda P, F: generate(P, [[1, 10**6]]), ValueError,
     "outside the vocabulary"),
    ("policy.generate", "prompt longer than the context", lambda P, F: generate(P, ["x" * 800]), ValueError,
     "the model's context is 768"),
    ("policy.generate", "max_new_tokens 0", lambda P, F: generate(P, ["a"], max_new_tokens=0), ValueError,
     "max_new_tokens must be an int >= 1"),
    ("policy.generate", "max_new_tokens a string", lambda P, F: generate(P, ["a"], max_new_tokens="5"), ValueError,
     "max_new_tokens must be an int"),
    ("policy.generate", "temperature 0 when sampling",
     lambda P, F: generate(P, ["a"], do_sample=True, temperature=0), ValueError, "temperature must be > 0"),
    ("policy.generate", "top_p 1.5", lambda P, F: generate(P, ["a"], do_sample=True, top_p=1.5), ValueError,
     "top_p must be in (0, 1]"),
    ("policy.generate", "backtrack_bias NaN", lambda P, F: generate(P, ["a"], backtrack_bias=float("nan")),
     ValueError, "backtrack_bias must be finite"),
    ("policy.generate", "backtrack_bias a string", lambda P, F: generate(P, ["a"], backtrack_bias="5"), ValueError,
     "backtrack_bias must be a number"),
    ("policy.generate", "max_backtracks -1", lambda P, F: generate(P, ["a"], max_backtracks=-1), ValueError,
     "max_backtracks must be an int >= 0"),
    ("policy.generate", "batch_size 0", lambda P, F: generate(P, ["a"], batch_size=0), ValueError,
     "batch_size must be an int >= 1"),
    ("policy.generate", "seeds of the wrong length", lambda P, F: generate(P, ["a"], seeds=[1, 2]), ValueError,
     "seeds has 2 entries for 1 prompts"),
    ("load_gsm8k", "missing file", lambda P, F: load_gsm8k(F["missing"]), FileNotFoundError,
     "no GSM8K split or JSONL file"),
    ("load_gsm8k", "malformed JSON line", lambda P, F: load_gsm8k(F["bad_json.jsonl"]), ValueError,
     "bad_json.jsonl:3: not valid JSON"),
    ("load_gsm8k", "a line that is not an object", lambda P, F: load_gsm8k(F["list_record.jsonl"]), ValueError,
     "list_record.jsonl:2: record list_record-1: expected a JSON object"),
    ("load_gsm8k", "solution without '#### n'", lambda P, F: load_gsm8k(F["no_final.jsonl"]), ValueError,
     "no_final.jsonl:2: record no_final-1: the solution has no '#### <number>'"),
    ("load_gsm8k", "question of the wrong type", lambda P, F: load_gsm8k(F["int_question.jsonl"]), ValueError,
     "int_question.jsonl:1: record int_question-0: empty or missing 'question'"),
    ("load_gsm8k", "a line that is not UTF-8", lambda P, F: load_gsm8k(F["latin1.jsonl"]), ValueError,
     "latin1.jsonl:2: not UTF-8 text"),
    ("load_gsm8k", "not a path", lambda P, F: load_gsm8k(5), ValueError, "takes a split"),
    ("load_policy", "missing folder", lambda P, F: load_policy(F["missing"]), FileNotFoundError, "does not exist"),
    ("load_policy", "unknown model name, offline", lambda P, F: load_policy("no-such-org/no-such-model"),
     ValueError, "hub is unreachable or has no such model. Download it where you have network access and pass the "
     "local folder"),
    ("load_policy", "empty name", lambda P, F: load_policy(""), ValueError, "needs a model name or a folder path"),
    ("load_policy", "name of the wrong type", lambda P, F: load_policy(3), ValueError,
     "needs a model name or a folder path"),
    ("load_policy", "folder without config.json", lambda P, F: load_policy(F["empty_dir"]), ValueError,
     "is not a policy checkpoint"),
    ("load_policy", "a file, not a folder", lambda P, F: load_policy(F["bad_json.jsonl"]), ValueError,
     "is not a policy checkpoint"),
    ("load_policy", "checkpoint of another format version", lambda P, F: load_policy(F["v99"]), ValueError,
     "format version 99; this Rewind reads version 1"),
    ("load_policy", "corrupted rewind_policy.json", lambda P, F: load_policy(F["bad_meta"]), ValueError,
     "the checkpoint is corrupted"),
    ("load_policy", "half-written weights (truncated)", lambda P, F: load_policy(F["truncated"]), ValueError,
     "corrupted or half-written"),
    ("load_policy", "weights missing", lambda P, F: load_policy(F["no_weights"]), ValueError,
     "corrupted or half-written"),
    ("load_tree", "missing file", lambda P, F: load_tree(F["missing"]), FileNotFoundError, "is not a tree file"),
    ("load_tree", "a folder", lambda P, F: load_tree(F["empty_dir"]), FileNotFoundError, "is not a tree file"),
    ("load_tree", "malformed JSON", lambda P, F: load_tree(F["tree_bad.json"]), ValueError,
     "is not valid JSON (line 2"),
    ("load_tree", "tree of another schema version", lambda P, F: load_tree(F["tree_v99.json"]), ValueError,
     "schema_version' is 99"),
    ("load_tree", "not a tree (a JSONL file)", lambda P, F: load_tree(F["no_final.jsonl"]), ValueError,
     "is not valid JSON"),
    ("load_verifier", "missing folder", lambda P, F: load_verifier(F["missing"]), FileNotFoundError,
     "is not a verifier folder"),
    ("load_verifier", "head of another format version", lambda P, F: load_verifier(F["head_v0"]), ValueError,
     "format version 0"),
    ("load_verifier", "head trained on another policy", lambda P, F: load_verifier(F["head16"], P), ValueError,
     "trained for another policy"),
    ("load_verifier", "a policy folder instead", lambda P, F: load_verifier(F["v99"]), FileNotFoundError,
     "is not a verifier folder"),
]


@pytest.mark.parametrize(("entry", "bad", "call", "error", "words"), CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_gets_a_clear_error(P, F, entry, bad, call, error, words):
    with pytest.raises(error) as info:
        call(P, F)
    assert type(info.value) is error or error is ValueError and isinstance(info.value, ValueError)
    assert words in str(info.value), str(info.value)


CLI_CASES = [
    # (argv, words on stderr): out-of-range knobs and bad paths given as flags
    (["solve", "Q?", "--threshold", "1.5", "--policy", "{v99}"], "threshold must be a number in [0, 1]"),
    (["solve", "Q?", "--width", "0", "--policy", "{v99}"], "width must be an integer >= 1"),
    (["solve", "Q?", "--max-kv-bytes", "0", "--policy", "{v99}"], "max_kv_bytes must be an integer >= 1"),
    (["solve", "Q?", "--policy", "{missing}"], "does not exist"),
    (["train-policy", "--out", "{out}", "--lr", "-1"], "lr must be > 0"),
    (["train-policy", "--out", "{out}", "--seed", "-1"], "seed must be in [0, 2**32)"),
    (["train-policy", "--out", "{out}", "--warmup-ratio", "1.5"], "warmup_ratio must be in [0, 1)"),
    (["train-policy", "--out", "{out}", "--model", "no-such-org/no-such-model", "--num-problems", "2",
      "--num-eval", "1"], "hub is unreachable"),
    (["data", "--n", "0", "--out", "{out}"], "--n must be >= 1"),
    (["data", "--task", "gsm8k", "--split", "{bad_json.jsonl}", "--out", "{out}"], "bad_json.jsonl:3"),
    (["export", "{missing}", "{out}/t.html"], "does not exist"),
    (["export", "{tree_bad.json}", "{out}/t.html"], "not valid JSON"),
    (["demo", "--out", "{out}", "--seed", "-1"], "seed must be in [0, 2**32)"),
]


@pytest.mark.parametrize(("argv", "words"), CLI_CASES, ids=[" ".join(c[0][:3]) + " " + c[1] for c in CLI_CASES])
def test_bad_flags_are_one_line_exit_2(F, tmp_path, capsys, argv, words):
    names = {k: str(v) for k, v in F.items()} | {"out": str(tmp_path / "out")}
    for key, value in names.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and words in err[-1] and err[-1].startswith(f"rewind {argv[0]}: error:"), err
    assert not any("Traceback" in line for line in err)


def test_the_table_has_a_row_per_entry_point():
    assert {c[0] for c in CASES} >= {"search.solve", "search.solve_many", "policy.generate", "load_gsm8k",
                                      "load_policy", "load_tree", "load_verifier"}
