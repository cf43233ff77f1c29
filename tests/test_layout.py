"""Property tests of the backspace semantics core (apply_backspaces, cache_layout)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import apply_backspaces, backspace_trace, cache_layout, layout_to_4d_mask

B = 9
tokens = st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=40)


def reference_backspace(ids, prompt_len):
    """An independent, eager reading of the semantics: a ⟨b⟩ deletes the last deletable token.

    Deferred deletion changes *when* tokens leave the cache, not *which* tokens the effective
    output keeps, so the eager reading must agree with apply_backspaces."""
    out = list(ids[:prompt_len])
    for t in ids[prompt_len:]:
        if t == B:
            if len(out) > prompt_len:
                out.pop()
        else:
            out.append(t)
    return out


@settings(max_examples=300, deadline=None)
@given(tokens, st.data())
def test_apply_backspaces_matches_eager_reference(ids, data):
    p = data.draw(st.integers(0, len(ids)))
    assert apply_backspaces(ids, B, prompt_len=p) == reference_backspace(ids, p)


@settings(max_examples=300, deadline=None)
@given(tokens, st.data())
def test_prompt_never_deleted_and_surplus_counted(ids, data):
    p = data.draw(st.integers(0, len(ids)))
    out = apply_backspaces(ids, B, prompt_len=p)
    assert out[:p] == ids[:p]
    trace = backspace_trace(ids, B, prompt_len=p)
    n_b = sum(1 for t in ids[p:] if t == B)
    n_text = len(ids) - p - n_b
    # every ⟨b⟩ deletes one generated token or is a counted no-op
    assert len(out) - p == n_text - (n_b - trace.surplus)
    assert sum(e.length for e in trace.events) == n_b


@settings(max_examples=200, deadline=None)
@given(tokens, st.data())
def test_cache_layout_invariants(ids, data):
    p = data.draw(st.integers(0, len(ids)))
    lay = cache_layout(ids, B, prompt_len=p)
    att, pos = lay.attention, lay.position_ids
    L = len(ids)
    assert att.shape == (L, L) and pos.shape == (L,)
    assert att.diagonal().all(), "every token attends to itself"
    assert att.any(-1).all(), "no row is empty"
    assert not att.triu(1).any(), "never attends to the future"
    assert torch.equal(pos, att.sum(-1) - 1), "position = number of alive tokens before it"
    assert att[:, :p].tril().sum() == sum(min(t + 1, p) for t in range(L)), "prompt always visible"
    # the last token's row (plus pending deletion) reproduces the effective sequence
    trace = backspace_trace(ids, B, prompt_len=p)
    if ids[-1] != B or L - 1 < p:
        assert sorted(trace.alive) == att[-1].nonzero().flatten().tolist()


def reference_rows(ids, prompt_len):
    """An independent replay of the inference cache as a list: ⟨b⟩ tokens enter the cache while
    their run lasts; the next text token first drops the run and as many generated tokens before
    it (never the prompt). ``rows[t]``: the raw indices in the cache when t is fed, t included."""
    cache, run, rows = [], 0, []
    for t, tok in enumerate(ids):
        if t >= prompt_len and tok == B:
            run += 1
        elif run:
            del cache[len(cache) - run:]
            deletable = sum(1 for k in cache if k >= prompt_len)
            del cache[len(cache) - min(run, deletable):]
            run = 0
        cache.append(t)
        rows.append(list(cache))
    return rows


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3, B, B]), min_size=1, max_size=60), st.data())
def test_cache_layout_equals_a_list_replay_of_the_cache(ids, data):
    p = data.draw(st.integers(0, len(ids)))
    lay = cache_layout(ids, B, prompt_len=p)
    rows = reference_rows(ids, p)
    assert [r.nonzero().flatten().tolist() for r in lay.attention] == rows
    assert lay.position_ids.tolist() == [len(r) - 1 for r in rows]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=1, max_size=30))
def test_layout_without_backtracks_is_causal(ids):
    lay = cache_layout(ids, B)
    L = len(ids)
    assert torch.equal(lay.attention, torch.ones(L, L, dtype=torch.bool).tril())
    assert torch.equal(lay.position_ids, torch.arange(L))


def test_design_example():
    # DESIGN §1: P P P E E ⟨b⟩ ⟨b⟩ C C
    ids = [1, 1, 1, 5, 5, B, B, 7, 7]
    lay = cache_layout(ids, B, prompt_len=3)
    assert lay.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4]
    assert lay.attention[7].nonzero().flatten().tolist() == [0, 1, 2, 7]
    assert lay.attention[6].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert apply_backspaces(ids, B, prompt_len=3) == [1, 1, 1, 7, 7]


def test_backtrack_in_prompt_is_literal():
    assert apply_backspaces([B, 2, B], B, prompt_len=2) == [B, 2]


@pytest.mark.parametrize(
    "ids,prompt_len,match",
    [
        ([], 0, "at least one token"),
        ([1, 2], 3, "prompt_len"),
        ([1, 2], -1, "prompt_len"),
        ([1, -4], 0, "non-negative"),
        ([1, 2.5], 0, "integers"),
    ],
)
def test_bad_input(ids, prompt_len, match):
    with pytest.raises(ValueError, match=match):
        cache_layout(ids, B, prompt_len=prompt_len)


def test_mask_conversion():
    att = torch.tensor([[True, False], [True, True]])
    m = layout_to_4d_mask(att)
    assert m.shape == (1, 1, 2, 2) and m[0, 0, 0, 1] == torch.finfo(torch.float32).min and m[0, 0, 1, 0] == 0
    with pytest.raises(ValueError, match="no allowed key"):
        layout_to_4d_mask(torch.tensor([[False, False], [True, True]]))
    with pytest.raises(ValueError, match="bool"):
        layout_to_4d_mask(torch.ones(2, 2))
