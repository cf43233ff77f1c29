"""Prompt formats: how a question becomes the prompt's token ids, for training, decoding, search and eval.

Four kinds, one ``PromptFormat`` record (saved with the policy in ``rewind_policy.json``):

| kind       | prompt                                                                          |
| ---------- | ------------------------------------------------------------------------------- |
| `plain`    | ``Question: {question}\\nAnswer:\\n`` (the built-in default)                     |
| `fewshot`  | k solved exemplars in the plain form, then the plain prompt of the question     |
| `template` | a user template (a file's text) with ``{question}``; exemplars as ``{examples}`` |
| `chat`     | the tokenizer's chat template: one user turn, the generation prompt opened      |

User and dataset text never becomes control tokens: every piece of it is encoded with the
tokenizer's special-token parsing off (``encode_text``), so a question that contains the literal
text of ⟨b⟩, EOS or pad stays plain text. Only text the format owns (the chat template's own
markers) is parsed for special tokens. For `chat`, the template is rendered with placeholder
contents and split at them, so the question is encoded on its own, never inside the template.

The few-shot prefix is part of the *prompt*, not of the question: ``prefix_ids`` is the shared
part (identical for every question), so a KV store can reuse it across problems.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["PLAIN", "PROMPT_KINDS", "PromptFormat", "encode_text", "few_shot", "protect_special_tokens"]

PROMPT_KINDS = ("plain", "fewshot", "template", "chat")
PLAIN_TEMPLATE = "Question: {question}\nAnswer:\n"
_EXAMPLE_SEP = "\n\n"
# A placeholder that no tokenizer template rewrites and no question contains.
_SLOT = "\x00REWIND-SLOT-{i}\x00"


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as plain text: no BOS/EOS added, special-token text not parsed.

    ``split_special_tokens=True`` is the transformers switch that makes ``"<|im_end|>"`` inside
    ``text`` tokenize as its characters instead of the EOS id (fast and slow tokenizers).
    """
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def protect_special_tokens(tokenizer) -> None:
    """Make plain-text encoding the tokenizer's default, so code that calls ``tokenizer(text)``
    without ``split_special_tokens`` (data builders, harvesting) cannot turn user text into
    control tokens either."""
    tokenizer.split_special_tokens = True


@dataclass(frozen=True, kw_only=True)
class PromptFormat:
    """How a question becomes a prompt. ``exemplars`` are ``(question, solution)`` pairs."""

    kind: Literal["plain", "fewshot", "template", "chat"] = "plain"
    template: str = PLAIN_TEMPLATE  # text with {question} (and, for kind template, optionally {examples})
    exemplars: tuple[tuple[str, str], ...] = ()  # few-shot examples, shown before the question
    system: str | None = None  # chat: a system message (None: the template's default)

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"prompt format kind must be one of {PROMPT_KINDS}, got {self.kind!r}")
        if "{question}" not in self.template:
            raise ValueError("a prompt template must contain '{question}' (where the question goes)")
        if self.kind == "fewshot" and not self.exemplars:
            raise ValueError("a few-shot prompt format needs at least one exemplar (k >= 1)")
        object.__setattr__(self, "exemplars", tuple((str(q), str(s)) for q, s in self.exemplars))

    # ---- text -------------------------------------------------------------------------------
    def _fill(self, template: str, question: str) -> str:
        # str.replace, not str.format: a question with braces must not be parsed as a field.
        return template.replace("{question}", question)

    def _examples_text(self) -> str:
        return "".join(self._fill(PLAIN_TEMPLATE, q) + s + _EXAMPLE_SEP for q, s in self.exemplars)

    def _pieces(self, question: str, tokenizer) -> list[tuple[str, bool]]:
        """The prompt as ``(text, is_user_text)`` pieces; user text is never parsed for specials."""
        if self.kind == "chat":
            return self._chat_pieces(question, tokenizer)
        head = self._examples_text() if self.kind == "fewshot" else ""
        template = self.template
        if self.kind == "template" and "{examples}" in template:
            before, after = template.split("{examples}", 1)
            head, template = before + self._examples_text(), after
        before, after = template.split("{question}", 1)
        # exemplars and the template are text the user gave: plain text too.
        return [(head + before, True), (question, True), (after.replace("{question}", question), True)]

    def _chat_pieces(self, question: str, tokenizer) -> list[tuple[str, bool]]:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"prompt format 'chat' needs a tokenizer with a chat template; "
                             f"{type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) has none. "
                             "Use --prompt-format plain, fewshot or a template file")
        contents: list[str] = []
        messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        for q, s in self.exemplars:
            messages += [{"role": "user", "content": _SLOT.format(i=len(contents))},
                         {"role": "assistant", "content": _SLOT.format(i=len(contents) + 1)}]
            contents += [q, s]
        messages.append({"role": "user", "content": _SLOT.format(i=len(contents))})
        contents.append(question)
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pieces: list[tuple[str, bool]] = []
        for i, content in enumerate(contents):
            slot = _SLOT.format(i=i)
            if rendered.count(slot) != 1:
                raise ValueError("the tokenizer's chat template does not place each message's content once")
            before, rendered = rendered.split(slot, 1)
            pieces += [(before, False), (content, True)]
        return [*pieces, (rendered, False)]

    def render(self, question: str, tokenizer=None) -> str:
        """The prompt as text (for display; ``encode`` is what the model sees)."""
        return "".join(t for t, _ in self._pieces(question, tokenizer))

    # ---- ids --------------------------------------------------------------------------------
    def encode(self, question: str, tokenizer) -> list[int]:
        """Prompt token ids of ``question``. Plain-text formats are encoded in one piece (so the
        ids equal ``encode_text(render(question))``); chat pieces are encoded one by one."""
        if not isinstance(question, str):
            raise ValueError(f"a question must be a string, got {type(question).__name__}")
        pieces = self._pieces(question, tokenizer)
        if all(user for _, user in pieces):
            return encode_text(tokenizer, "".join(t for t, _ in pieces))
        ids: list[int] = []
        for text, user in pieces:
            if user:
                ids += encode_text(tokenizer, text)
            elif text:
                ids += list(tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"])
        return ids

    def prefix_ids(self, tokenizer) -> list[int]:
        """The ids every question's prompt starts with (the shared few-shot part; may be empty)."""
        a, b = self.encode("A", tokenizer), self.encode("B", tokenizer)
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "exemplars": [list(e) for e in self.exemplars]}

    @classmethod
    def from_dict(cls, data: dict) -> PromptFormat:
        return cls(**{**data, "exemplars": tuple(tuple(e) for e in data.get("exemplars", ()))})


PLAIN = PromptFormat()


def few_shot(k: int, exemplars: Sequence, *, kind: Literal["fewshot", "chat"] = "fewshot") -> PromptFormat:
    """A k-shot format from problems (objects with ``question`` and ``solution``), first k taken."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"few-shot k must be an int >= 1, got {k!r}")
    chosen = list(exemplars)[:k]
    if len(chosen) < k:
        raise ValueError(f"few-shot k={k} but only {len(chosen)} exemplar problems were given")
    return PromptFormat(kind=kind, exemplars=tuple((p.question, p.solution) for p in chosen))
