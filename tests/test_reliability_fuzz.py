"""Fuzzing (issue 11 §6) that the other test files do not already do: random ⟨b⟩-sequences
through the training ``Collator`` in `hard` mode against ``cache_layout`` (the semantics core),
batched with padding; and the shipped GSM8K files through the JSONL loader line by line.

Already covered elsewhere (not repeated here): backspace semantics and layout invariants
(tests/test_layout.py), random problems through grading / the generator / injection
(tests/test_data_*.py), random trees through every export (tests/test_export.py), the full GSM8K
round trip (slow, tests/test_data_problems.py)."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.collator import Collator
from policy.data import load_gsm8k
from policy.data.segments import Segment
from policy.layout import apply_backspaces, cache_layout

B, PAD = 9, 0  # ⟨b⟩ and pad ids of the fuzzed vocabulary (ordinary tokens are 1..8)


@st.composite
def examples(draw):
    prompt = draw(st.lists(st.integers(1, 8), min_size=1, max_size=5))
    rest = draw(st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, B, B]), min_size=1, max_size=24))
    ids = prompt + rest
    segments = [int(Segment.PROMPT)] * len(prompt) + [int(Segment.BACKTRACK if t == B else Segment.CLEAN)
                                                       for t in rest]
    clean = prompt + apply_backspaces(rest, B)
    return {"input_ids": ids, "segments": segments, "prompt_len": len(prompt), "clean_ids": clean}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(examples(), min_size=1, max_size=4))
def test_hard_collator_rows_equal_cache_layout(batch):
    out = Collator(mode="hard", pad_token_id=PAD, backtrack_id=B, attn_form="bool")(batch)
    L = out["input_ids"].shape[1]
    assert L == max(len(ex["input_ids"]) for ex in batch)
    assert out["attention_mask"].shape == (len(batch), 1, L, L)
    for b, ex in enumerate(batch):
        n = len(ex["input_ids"])
        ref = cache_layout(ex["input_ids"], B, prompt_len=ex["prompt_len"])
        assert out["input_ids"][b, :n].tolist() == ex["input_ids"]
        assert torch.equal(out["position_ids"][b, :n], ref.position_ids)
        mask = out["attention_mask"][b, 0]
        assert torch.equal(mask[:n, :n], ref.attention)
        assert not mask[:n, n:].any()  # no real token sees a pad
        assert torch.equal(mask[n:, n:], torch.eye(L - n, dtype=torch.bool))  # a pad sees only itself
        assert mask.any(-1).all()  # no fully masked row
        labels = out["labels"][b]
        assert (labels[:ex["prompt_len"]] == -100).all() and (labels[n:] == -100).all()
    float_mask = Collator(mode="hard", pad_token_id=PAD, backtrack_id=B)(batch)["attention_mask"]
    assert torch.equal(float_mask == 0, out["attention_mask"])


def _lines(split: str) -> list[str]:
    path = resources.files("policy.data").joinpath("gsm8k", f"{split}.jsonl")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["train", "test"]), st.data())
def test_any_slice_of_the_shipped_gsm8k_loads_as_the_same_problems(tmp_path_factory, split, data):
    """A JSONL slice of the real files loads record by record into the problems the split gives."""
    lines = _lines(split)
    start = data.draw(st.integers(0, len(lines) - 1))
    count = data.draw(st.integers(1, 20))
    path = tmp_path_factory.mktemp("gsm") / "slice.jsonl"
    path.write_text("\n".join(lines[start:start + count]) + "\n", encoding="utf-8")
    full = load_gsm8k(split)[start:start + count]
    sliced = load_gsm8k(path)
    assert [(p.question, p.solution, p.answer) for p in sliced] == [(p.question, p.solution, p.answer)
                                                                      for p in full]
    for p, line in zip(sliced, lines[start:start + count]):
        assert json.loads(line)["question"] == p.question


def _real_gsm8k_through_builders(problems) -> int:
    """GSM8K problems → SFT and DPO datasets (char tokenizer) → the hard Collator: every example
    applies its backspaces to its clean ids, and every collated row is the cache layout."""
    from policy import tiny_policy
    from policy.backtrack import backtrack_token_id
    from policy.data import build_dataset

    tok = tiny_policy(hidden_size=8, num_layers=1, num_heads=1, num_kv_heads=1).tokenizer
    bid = backtrack_token_id(tok)
    sft = build_dataset("sft", problems, tok, seed=0, progress=False)
    assert len(sft) > 0.9 * len(problems)  # the rest are counted skips, never silent
    collate = Collator(mode="hard", pad_token_id=tok.pad_token_id, backtrack_id=bid, attn_form="bool")
    for start in range(0, len(sft), 16):
        rows = [sft[i] for i in range(start, min(start + 16, len(sft)))]
        out = collate(rows)
        for b, row in enumerate(rows):
            ids, p = row["input_ids"], row["prompt_len"]
            assert ids[:p] + apply_backspaces(ids[p:], bid) == row["clean_ids"]
            ref = cache_layout(ids, bid, prompt_len=p)
            assert torch.equal(out["position_ids"][b, :len(ids)], ref.position_ids)
    dpo = build_dataset("dpo", problems, tok, seed=0, progress=False)
    assert len(dpo) > 0
    return len(sft)


def test_real_gsm8k_sample_through_builders_and_collator():
    assert _real_gsm8k_through_builders(load_gsm8k("train")[:60] + load_gsm8k("test")[-60:]) >= 100


@pytest.mark.slow
def test_all_of_real_gsm8k_through_builders_and_collator():
    assert _real_gsm8k_through_builders(load_gsm8k("train") + load_gsm8k("test")) >= 8000
