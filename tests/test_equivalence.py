"""The backbone test of hard backtracking (DESIGN §1): one training forward with ``cache_layout``
equals incremental decoding that physically crops the KV cache, and equals a clean forward on the
effective sequence for every surviving token."""

import random

import pytest
import torch
from tiny_models import FAMILIES, VOCAB, tiny_lm
from transformers import DynamicCache

from policy import backspace_trace, cache_layout, layout_to_4d_mask

B = VOCAB - 1  # the backtrack id in these tests


def random_sequence(rng: random.Random, prompt_len: int = 4, n_runs: int = 3) -> list[int]:
    """Prompt, then text interleaved with ⟨b⟩-runs: some inside the text, one reaching past the
    generated text into the prompt (surplus no-ops)."""
    ids = [rng.randrange(1, B) for _ in range(prompt_len)]
    alive = 0
    for r in range(n_runs):
        n = rng.randint(1, 5)
        ids += [rng.randrange(1, B) for _ in range(n)]
        alive += n
        k = alive + 2 if r == 1 else rng.randint(1, alive)  # run 1 overshoots into the prompt
        ids += [B] * k
        alive = max(0, alive - k)
    ids += [rng.randrange(1, B) for _ in range(rng.randint(1, 4))]
    return ids


def layout_logits(model, ids, prompt_len):
    lay = cache_layout(ids, B, prompt_len=prompt_len)
    mask = layout_to_4d_mask(lay.attention, torch.float32)
    out = model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=lay.position_ids[None])
    return out.logits[0]


def incremental_logits(model, ids, prompt_len):
    """Feed one token at a time; when a run ends, crop the deleted tokens and the ⟨b⟩ from the cache."""
    trace = backspace_trace(ids, B, prompt_len=prompt_len)
    drop_before = {}  # raw index of the token after a run -> entries to crop before feeding it
    for e in trace.events:
        drop_before[e.start + e.length] = e.length + e.deleted
    cache = DynamicCache()
    rows = []
    for t, tok in enumerate(ids):
        if t in drop_before:
            cache.crop(-drop_before[t])  # physical removal
        pos = cache.get_seq_length()
        out = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True,
                    position_ids=torch.tensor([[pos]]))
        cache = out.cache
        rows.append(out.logits[0, -1])
    return torch.stack(rows)


CASES = [(f, a) for f in FAMILIES for a in ("eager", "sdpa")]


@pytest.mark.parametrize("family,attn", CASES)
@torch.no_grad()
def test_layout_equals_physical_cache_crop(family, attn):
    model = tiny_lm(family, attn)
    rng = random.Random(f"{family}-{attn}")
    for _ in range(4):
        ids = random_sequence(rng)
        assert ids.count(B) > 0
        a = layout_logits(model, ids, 4)
        b = incremental_logits(model, ids, 4)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,attn", CASES)
@torch.no_grad()
def test_layout_equals_clean_forward_on_effective_sequence(family, attn):
    model = tiny_lm(family, attn)
    rng = random.Random(f"clean-{family}-{attn}")
    for _ in range(4):
        ids = random_sequence(rng)
        trace = backspace_trace(ids, B, prompt_len=4)
        first_correction = trace.events[0].start + trace.events[0].length
        a = layout_logits(model, ids, 4)
        alive = list(trace.alive)
        clean = model(input_ids=torch.tensor([[ids[i] for i in alive]])).logits[0]
        checked = 0
        for j, raw in enumerate(alive):
            if raw >= first_correction:
                torch.testing.assert_close(a[raw], clean[j], atol=1e-4, rtol=1e-4)
                checked += 1
        assert checked > 0


@torch.no_grad()
def test_naive_causal_forward_differs_from_hard_layout():
    """Guard against a vacuous layout: a plain causal forward over the same tokens must differ
    after the correction (the correction would attend to the error)."""
    model = tiny_lm("llama")
    ids = [1, 2, 3, 10, 11, B, B, 20, 21]
    a = layout_logits(model, ids, 3)
    causal = model(input_ids=torch.tensor([ids])).logits[0]
    assert not torch.allclose(a[7:], causal[7:], atol=1e-3)
    torch.testing.assert_close(a[:7], causal[:7], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_batched_padded_layout_matches_unbatched():
    """Two sequences of different length in one batch (right padding, pads attend to themselves)."""
    model = tiny_lm("qwen2")
    s1 = [1, 2, 3, 10, B, 20, 21]
    s2 = [4, 5, 6, 7, 30, 31, 32, B, B, B, 33, 34]
    L = len(s2)
    att = torch.zeros(2, L, L, dtype=torch.bool)
    pos = torch.zeros(2, L, dtype=torch.long)
    ids = torch.zeros(2, L, dtype=torch.long)
    for r, (s, p) in enumerate(((s1, 3), (s2, 4))):
        lay = cache_layout(s, B, prompt_len=p)
        n = len(s)
        att[r, :n, :n] = lay.attention
        att[r, range(n, L), range(n, L)] = True
        pos[r, :n] = lay.position_ids
        ids[r, :n] = torch.tensor(s)
    out = model(input_ids=ids, attention_mask=layout_to_4d_mask(att), position_ids=pos).logits
    torch.testing.assert_close(out[0, : len(s1)], layout_logits(model, s1, 3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], layout_logits(model, s2, 4), atol=1e-4, rtol=1e-4)
