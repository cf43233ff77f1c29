"""A prompt format from its command-line spec (``--prompt-format``): ``plain``, ``chat``,
``fewshot:K``, ``chat-fewshot:K`` or a template file. Few-shot exemplars come from the task's
problems, so this sits above both ``policy.prompts`` and ``policy.data`` (which encodes prompts
with ``policy.prompts``)."""

from __future__ import annotations

from pathlib import Path

from policy import data
from policy.prompts import PLAIN, PromptFormat, few_shot

__all__ = ["prompt_format_from_spec"]


def _exemplar_problems(task: str, k: int) -> list:
    """k exemplars for ``task``: GSM8K test problems from the tail (training uses the train split's
    head and the evaluation the test split's head), or the generator's test split."""
    if task == "gsm8k":
        return list(data.load_gsm8k("test"))[-k:]
    return list(data.generate_problems(k, seed=10_007, split="test"))


def prompt_format_from_spec(spec: str | None, *, task: str = "builtin") -> PromptFormat:
    """``plain`` | ``chat`` | ``fewshot:K`` | ``chat-fewshot:K`` | a template file path (with ``{question}``)."""
    if spec is None or spec == "plain":
        return PLAIN
    if spec == "chat":
        return PromptFormat(kind="chat")
    for prefix, kind in (("fewshot:", "fewshot"), ("chat-fewshot:", "chat")):
        if spec.startswith(prefix):
            try:
                k = int(spec[len(prefix):])
            except ValueError:
                raise ValueError(f"prompt format {spec!r}: expected {prefix}K with an integer K") from None
            return few_shot(k, _exemplar_problems(task, k), kind=kind)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"prompt format {spec!r} is neither plain, chat, fewshot:K, chat-fewshot:K "
                         "nor an existing template file")
    text = path.read_text(encoding="utf-8")
    return PromptFormat(kind="template", template=text,
                        exemplars=tuple((p.question, p.solution) for p in _exemplar_problems(task, 2))
                        if "{examples}" in text else ())
