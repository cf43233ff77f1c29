"""Problems: the GSM8K loaders, record validation, the prompt format and tokenization."""

import json

import pytest

from policy import char_tokenizer
from policy.data import PROMPT_TEMPLATE, Problem, encode_problem, format_prompt, load_gsm8k


def test_shipped_gsm8k_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, test = load_gsm8k("train"), load_gsm8k("test")
    assert (len(train), len(test)) == (7473, 1319)
    p = train[0]
    assert p.id == "gsm8k-train-0" and p.answer == "72" and p.solution.endswith("#### 72")
    assert len({q.id for q in train}) == len(train)


def test_jsonl_path(tmp_path):
    path = tmp_path / "mini.jsonl"
    rows = [{"question": "Q1?", "answer": "<<1+1=2>>2\n#### 2"}, {"question": "Q2?", "answer": "#### 1,000"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    problems = load_gsm8k(path)
    assert [p.answer for p in problems] == ["2", "1000"]
    assert problems[1].id == "mini-1"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"question": "", "answer": "#### 1"}), "empty or missing 'question'"),
        (json.dumps({"question": "Q?", "answer": "no final line"}), "no '#### <number>'"),
        (json.dumps({"question": "Q?"}), "missing 'answer'"),
        (json.dumps([1, 2]), "expected a JSON object"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "#### 1"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{message}"):
        load_gsm8k(path)


def test_missing_path():
    with pytest.raises(FileNotFoundError):
        load_gsm8k("no/such/file.jsonl")


def test_prompt_and_encoding():
    tok = char_tokenizer()
    p = Problem(question="What is 2+3?", solution="<<2+3=5>>5\n#### 5", answer="5", id="x")
    assert format_prompt(p.question) == PROMPT_TEMPLATE.format(question=p.question) == "Question: What is 2+3?\nAnswer:\n"
    prompt_ids, solution_ids = encode_problem(p, tok)
    assert tok.decode(prompt_ids) == format_prompt(p.question)
    assert solution_ids[-1] == tok.eos_token_id and tok.bos_token_id not in prompt_ids + solution_ids
    assert tok.decode(solution_ids[:-1]) == p.solution
