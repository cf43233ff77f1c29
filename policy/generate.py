"""``generate``: batched decoding with hard backtracking (the KV cache physically rewinds on ⟨b⟩).

With ``rewind=False`` (the soft ablation) ⟨b⟩ is an ordinary token: nothing leaves the cache and
positions keep counting; the returned ``ids``/``text`` still apply the backspaces.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from policy.decoding import new_store, prefill
from policy.layout import RunEvent, apply_backspaces, backspace_trace
from policy.prompts import encode_text
from policy.sampling import SamplingConfig, row_generators
from policy.stepper import Row, StepConfig, Stepper
from search.config import SearchConfig
from search.knobs import knob, knob_of

if TYPE_CHECKING:  # policy.model imports the engine, which imports this module: Policy is only an annotation here
    from policy.model import Policy

__all__ = ["DecodeConfig", "Generation", "generate", "newline_token_ids", "row_seed"]

ANSWER_LINE = re.compile(r"(?m)^####[^\n]*\S")


@dataclass(frozen=True)
class Generation:
    """One decoded sequence. Raw indices count generated tokens (the prompt excluded)."""

    prompt_ids: tuple[int, ...]
    raw_ids: tuple[int, ...]  # generated tokens as sampled, ⟨b⟩ included
    ids: tuple[int, ...]  # alive generated tokens (backspaces applied)
    text: str  # decoded ``ids``
    raw_text: str  # decoded ``raw_ids``, ⟨b⟩ visible
    backtracks: tuple[RunEvent, ...]  # runs: start (raw index), length, deleted
    logprobs: tuple[float, ...]  # per raw token, log-prob under the model (temperature 1, no bias)
    stop_reason: str  # "eos", "answer", "max_new_tokens", "context"
    surplus_backtracks: int  # ⟨b⟩ that had nothing left to delete (runs into the prompt)
    backtrack_cap_hit: bool  # the per-sequence ⟨b⟩ cap was reached (⟨b⟩ then forbidden)
    hidden: torch.Tensor | None = None  # [n_fed, H] last-layer hidden state of every fed generated token


_NEWLINE_CACHE: dict[int, frozenset[int]] = {}


def newline_token_ids(tokenizer) -> frozenset[int]:
    """Ids whose text contains a newline (computed once per tokenizer)."""
    key = id(tokenizer)
    if key not in _NEWLINE_CACHE:
        _NEWLINE_CACHE[key] = frozenset(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))
    return _NEWLINE_CACHE[key]


def row_seed(seed: int, *path: int) -> int:
    """A stable 63-bit seed from a run seed and a path of indices (not Python's salted ``hash``)."""
    h = hashlib.blake2b(repr((int(seed),) + tuple(int(p) for p in path)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def _encode_prompts(policy: Policy, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError("prompts must be a list of strings (or of token-id lists)")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    out = []
    vocab = policy.model.get_input_embeddings().weight.shape[0]
    for i, p in enumerate(prompts):
        if not isinstance(p, (str, Sequence)) or isinstance(p, bytes):
            raise ValueError(f"prompt {i} is a {type(p).__name__}; prompts must be a list of strings (or of token-id lists)")
        # A string prompt is user text: encoded with special-token parsing off (policy.prompts.encode_text).
        ids = encode_text(policy.tokenizer, p) if isinstance(p, str) else [int(t) for t in p]
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        if max(ids) >= vocab or min(ids) < 0:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary of {vocab}")
        out.append(ids)
    return out


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """The decoding knobs of ``generate``: its keyword defaults are these fields' defaults (written
    once, here), and ``rewind generate`` makes its flags from them."""

    rewind: bool = knob(True, "apply each ⟨b⟩-run to the cache (DESIGN §1); False keeps ⟨b⟩ in it (soft, ablation)")
    max_new_tokens: int = knob(256, "most generated tokens per prompt, >= 1")
    do_sample: bool = knob(False, "sample instead of greedy decoding", flag=True)
    temperature: float = knob(1.0, "sampling temperature, > 0 (with --do-sample)")
    top_p: float = knob(1.0, "nucleus sampling mass, in (0, 1] (with --do-sample)")
    seed: int = knob(0, "sampling seed; row i draws from row_seed(seed, i)")
    backtrack_bias: float = knob(0.0, "added to the ⟨b⟩ logit (finite, or -inf to forbid ⟨b⟩)")
    max_backtracks: int = knob(64, "most ⟨b⟩ per sequence, >= 0; past it ⟨b⟩ is forbidden")
    max_backtracks_per_step: int = knob_of(SearchConfig, "max_backtracks_per_step")  # a step is a line here
    stop_at_answer: bool = knob(True, "stop a row at the end of its '#### answer' line")


_D = DecodeConfig  # the defaults below are its fields' defaults


def generate(
    policy: Policy,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    rewind: bool = _D.rewind,
    max_new_tokens: int = _D.max_new_tokens,
    do_sample: bool = _D.do_sample,
    temperature: float = _D.temperature,
    top_p: float = _D.top_p,
    seed: int = _D.seed,
    seeds: Sequence[int] | None = None,
    backtrack_bias: float = _D.backtrack_bias,
    max_backtracks: int = _D.max_backtracks,
    max_backtracks_per_step: int = _D.max_backtracks_per_step,
    stop_at_answer: bool = _D.stop_at_answer,
    return_hidden: bool = False,
    on_forward: Callable[[list[int], torch.Tensor, torch.Tensor], None] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> list[Generation]:
    """Decode every prompt; rows rewind independently. See ``Generation`` for the fields.

    Row i samples with its own generator seeded by ``seeds[i]`` (default ``row_seed(seed, i)``),
    so a prompt's sample does not depend on the rest of the batch. ``backtrack_bias`` is added
    to the ⟨b⟩ logit; ⟨b⟩ is forbidden once a row has emitted ``max_backtracks`` of them, or
    ``max_backtracks_per_step`` within the current line. ``on_forward(rows, logits [n, V],
    hidden [n, H])`` is called after every forward with the prompt indices of the rows fed, their
    raw next-token logits and last-layer hidden states — the verifier's hook, at no extra forward.
    """
    _check_args(policy, rewind=rewind, max_new_tokens=max_new_tokens, max_backtracks=max_backtracks,
                max_backtracks_per_step=max_backtracks_per_step, batch_size=batch_size, backtrack_bias=backtrack_bias)
    sampling = SamplingConfig(do_sample=do_sample, temperature=temperature, top_p=top_p)
    encoded = _encode_prompts(policy, prompts)
    limit = policy.max_positions
    for i, ids in enumerate(encoded):
        if limit is not None and len(ids) >= limit:
            raise ValueError(f"prompt {i} has {len(ids)} tokens; the model's context is {limit}")
    if seeds is not None and len(seeds) != len(encoded):
        raise ValueError(f"seeds has {len(seeds)} entries for {len(encoded)} prompts")
    seeds = list(seeds) if seeds is not None else [row_seed(seed, i) for i in range(len(encoded))]
    out: list[Generation | None] = [None] * len(encoded)
    bar = tqdm(total=len(encoded), desc="generate", disable=not progress, unit="seq")
    store = new_store(policy.model)  # one store for every batch: a shared prompt prefix is run once
    for start in range(0, len(encoded), batch_size):
        idx = list(range(start, min(start + batch_size, len(encoded))))
        for i, g in _decode_batch(policy, [encoded[i] for i in idx], idx, [seeds[i] for i in idx], rewind=rewind,
                                  max_new_tokens=max_new_tokens, sampling=sampling, backtrack_bias=backtrack_bias,
                                  max_backtracks=max_backtracks, per_step=max_backtracks_per_step,
                                  stop_at_answer=stop_at_answer, return_hidden=return_hidden, on_forward=on_forward,
                                  store=store):
            out[i] = g
            bar.update(1)
    bar.close()
    return out  # type: ignore[return-value]


def _check_args(policy: Policy, *, rewind: bool, max_new_tokens: int, max_backtracks: int,
                max_backtracks_per_step: int, batch_size: int, backtrack_bias: float) -> None:
    """``generate``'s refusals of bad input, each with what was given."""
    if not (hasattr(policy, "model") and hasattr(policy, "tokenizer")):
        raise ValueError(f"policy must be a policy.Policy (tiny_policy() or load_policy(...)), got {type(policy).__name__}")
    if rewind and policy.backtrack_id is None:
        raise ValueError("rewind=True needs a policy with the backtrack token; load it with add_backtrack=True")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    for name, value, low in (("max_backtracks", max_backtracks, 0), ("max_backtracks_per_step", max_backtracks_per_step, 0),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(backtrack_bias, bool) or not isinstance(backtrack_bias, (int, float)):
        raise ValueError(f"backtrack_bias must be a number, got {backtrack_bias!r}")
    if not math.isfinite(backtrack_bias) and backtrack_bias != float("-inf"):
        raise ValueError(f"backtrack_bias must be finite or -inf, got {backtrack_bias}")


class _GenerateRules:
    """``generate``'s stop rules (before a token is fed: EOS, the answer line, the token budget, the context)."""

    def __init__(self, policy, *, max_new_tokens: int, stop_at_answer: bool, newlines: frozenset[int]):
        self.tok, self.bid, self.eos = policy.tokenizer, policy.backtrack_id, policy.tokenizer.eos_token_id
        self.limit, self.max_new_tokens = policy.max_positions, max_new_tokens
        self.stop_at_answer, self.newlines = stop_at_answer, newlines

    def before_feed(self, row: Row, c: int) -> str | None:
        if c == self.eos:
            return "eos"
        if self.stop_at_answer and c in self.newlines and _answer_done(self.tok, self.bid, row.raw):
            return "answer"
        if len(row.raw) >= self.max_new_tokens:
            return "max_new_tokens"
        if self.limit is not None and row.handle.length + 1 >= self.limit:
            return "context"
        return None

    def after_feed(self, row: Row, c: int) -> None:
        return None


@torch.no_grad()
def _decode_batch(policy, prompts, indices, seeds, *, rewind, max_new_tokens, sampling, backtrack_bias,
                  max_backtracks, per_step, stop_at_answer, return_hidden, on_forward, store=None):
    newlines = newline_token_ids(policy.tokenizer)
    store = store if store is not None else new_store(policy.model)
    roots, logits, hidden, _ = prefill(policy.model, store, prompts)
    if on_forward is not None:
        on_forward(list(indices), logits, hidden)
    gens = [None] * len(prompts) if sampling.greedy else row_generators(seeds, logits.device)
    rows = [Row(index=i, handle=store.insert(root), gen=g) for i, root, g in zip(indices, roots, gens)]
    cfg = StepConfig(backtrack_id=policy.backtrack_id, newlines=newlines, sampling=sampling, rewind=rewind,
                     backtrack_bias=backtrack_bias, max_backtracks=max_backtracks, max_backtracks_per_line=per_step,
                     keep_hidden=return_hidden)
    hook = None if on_forward is None else (lambda rs, lg, hd: on_forward([r.index for r in rs], lg, hd))
    stepper = Stepper(policy.model, store, cfg, _GenerateRules(policy, max_new_tokens=max_new_tokens,
                                                               stop_at_answer=stop_at_answer, newlines=newlines),
                      on_forward=hook)
    prompt_of = dict(zip(indices, prompts))
    for row, reason in stepper.run(rows, logits):
        yield row.index, _finish(policy, prompt_of[row.index], row, reason, return_hidden)
        store.release(row.handle)
    for root in roots:
        store.release(root)


def _answer_done(tok, bid: int | None, raw: list[int]) -> bool:
    """True when the alive text now ends a '#### answer' line (called on newline tokens only)."""
    alive = apply_backspaces(raw, bid) if bid is not None else raw
    return bool(ANSWER_LINE.search(tok.decode(alive, skip_special_tokens=True)))


def _finish(policy, prompt: Sequence[int], row: Row, reason: str, return_hidden: bool) -> Generation:
    tok = policy.tokenizer
    bid = policy.backtrack_id
    prompt_len = len(prompt)
    full = list(prompt) + row.raw
    events = []
    if bid is not None:
        trace = backspace_trace(full, bid, prompt_len=prompt_len)
        alive = [full[i] for i in trace.alive][prompt_len:]
        events = [RunEvent(start=e.start - prompt_len, length=e.length, deleted=e.deleted) for e in trace.events]
        surplus = trace.surplus
    else:
        alive, surplus = list(row.raw), 0
    hidden = torch.stack(row.fed_hidden) if return_hidden and row.fed_hidden else (
        torch.zeros(0, policy.hidden_size) if return_hidden else None)
    return Generation(
        prompt_ids=tuple(prompt), raw_ids=tuple(row.raw), ids=tuple(alive),
        text=tok.decode(alive, skip_special_tokens=True), raw_text=tok.decode(row.raw, skip_special_tokens=False),
        backtracks=tuple(events), logprobs=tuple(row.logprobs), stop_reason=reason, surplus_backtracks=surplus,
        backtrack_cap_hit=row.cap_hit, hidden=hidden,
    )
