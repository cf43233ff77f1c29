"""Problems: one record type, the prompt format, tokenization, and the GSM8K loaders.

A problem has a question, a reference solution in GSM8K form and a final answer::

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.      <- a step; <<expr=result>> is a calculator annotation
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether.
    #### 72                                               <- the final answer line

For training, the prompt is ``format_prompt(question)`` and the target is the solution followed by
EOS (no BOS), each tokenized on its own (``encode_problem``), so every package agrees on the ids.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from policy.data.grading import extract_answer
from policy.prompts import PLAIN, encode_text

__all__ = [
    "GSM8K_SPLITS",
    "PROMPT_TEMPLATE",
    "Problem",
    "encode_problem",
    "format_prompt",
    "load_gsm8k",
    "problem_from_record",
]

PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"
GSM8K_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One task: ``question`` text, reference ``solution`` (GSM8K form), normalized final ``answer``
    (as ``extract_answer`` returns it) and a stable ``id``."""

    question: str
    solution: str
    answer: str
    id: str


def _format_of(tokenizer, prompt_format):
    return prompt_format or getattr(tokenizer, "rewind_prompt_format", None) or PLAIN


def format_prompt(question: str, prompt_format=None, tokenizer=None) -> str:
    """The prompt text the policy sees for ``question`` (``policy.prompts.PromptFormat``; default
    plain ``Question: …\nAnswer:\n``, or the format a policy's tokenizer carries). For a chat
    format this is display text: encode prompts with ``encode_problem`` / ``PromptFormat.encode``."""
    return _format_of(tokenizer, prompt_format).render(question, tokenizer)


def encode_problem(problem: Problem, tokenizer: PreTrainedTokenizerBase,
                   prompt_format=None) -> tuple[list[int], list[int]]:
    """Token ids ``(prompt_ids, solution_ids)``; the solution ids end with ``eos_token_id``.

    Both parts are tokenized separately with ``add_special_tokens=False``, so the ids of the
    full sequence are ``prompt_ids + solution_ids`` whatever the tokenizer's merges would do
    across the boundary. The prompt follows ``prompt_format`` (default: the format the policy's
    tokenizer carries, set by ``Policy``, else plain); question and solution text are encoded
    with special-token parsing off, so dataset text never becomes a control token.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos_token_id; solutions must end with EOS")
    prompt_ids = _format_of(tokenizer, prompt_format).encode(problem.question, tokenizer)
    solution_ids = encode_text(tokenizer, problem.solution)
    return list(prompt_ids), [*solution_ids, tokenizer.eos_token_id]


def problem_from_record(record: object, problem_id: str) -> Problem:
    """Validate a GSM8K-format record ``{"question": ..., "answer": ...}`` into a ``Problem``.

    Raises ``ValueError`` naming ``problem_id`` when a field is missing or empty, or the
    solution has no ``#### answer`` line with a number.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record {problem_id}: expected a JSON object, got {type(record).__name__}")
    question, solution = record.get("question"), record.get("answer", record.get("solution"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"record {problem_id}: empty or missing 'question'")
    if not isinstance(solution, str) or not solution.strip():
        raise ValueError(f"record {problem_id}: empty or missing 'answer' (the solution text)")
    answer = extract_answer(solution)
    if answer is None:
        raise ValueError(f"record {problem_id}: the solution has no '#### <number>' final line")
    return Problem(question=question, solution=solution, answer=answer, id=problem_id)


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    # A one-shot probe: datasets' own retries take ~25 s to give up when there is no network.
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)  # the hub's address, honouring HF_ENDPOINT mirrors
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s):
            return True
    except (OSError, TypeError):
        return False


def _load_hub(split: str) -> list[Problem] | None:
    if not _hub_reachable():
        return None
    try:
        import datasets

        ds = datasets.load_dataset("openai/gsm8k", "main", split=split)
    except Exception:  # any connection / cache failure: the shipped copy is the same data
        return None
    return [problem_from_record(r, f"gsm8k-{split}-{i}") for i, r in enumerate(ds)]


def _load_jsonl(path: Path, prefix: str) -> list[Problem]:
    problems = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            try:
                problems.append(problem_from_record(record, f"{prefix}-{len(problems)}"))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return problems


def load_gsm8k(split_or_path: str | os.PathLike = "train") -> list[Problem]:
    """Load GSM8K problems.

    ``"train"``/``"test"``: the hub dataset ``openai/gsm8k`` (``main``) when the hub is reachable
    and ``HF_HUB_OFFLINE`` is unset, else (quietly) the copy shipped in ``policy/data/gsm8k``.
    Any other value is a path to a JSONL file with ``question`` and ``answer`` fields; a
    malformed line raises ``ValueError`` with its line number. Ids are ``gsm8k-<split>-<index>``.
    """
    if not isinstance(split_or_path, (str, os.PathLike)):
        raise ValueError(f"load_gsm8k takes a split ({', '.join(GSM8K_SPLITS)}) or a JSONL path, "
                         f"got {type(split_or_path).__name__}")
    name = os.fspath(split_or_path)
    if name in GSM8K_SPLITS:
        hub = _load_hub(name)
        if hub is not None:
            return hub
        shipped = resources.files("policy.data").joinpath("gsm8k", f"{name}.jsonl")
        with resources.as_file(shipped) as p:
            return _load_jsonl(Path(p), f"gsm8k-{name}")
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no GSM8K split or JSONL file named {name!r} (splits: {', '.join(GSM8K_SPLITS)})")
    return _load_jsonl(path, path.stem)
