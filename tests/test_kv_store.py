"""The KV store: its operation-level API, its byte counts and its refusals of bad input."""

import pytest
import torch
from test_generate import lively_policy

from policy.decoding import RewindBatch, forward_items, new_store, prefill
from policy.kv_store import KVStore
from policy.layout import RewindCounter, cache_layout


def _store():
    """A CPU store whose pool has been written once (so bytes per slot are known)."""
    p = lively_policy(seed=11)
    store = new_store(p.model, capacity=8)
    return p, store


def test_bytes_count_every_live_slot_and_peak_keeps_the_maximum():
    p, store = _store()
    root = store.insert(None)
    forward_items(p.model, store, [(root, [5, 6, 7, 8])])
    per = store.pool.bytes_per_slot
    assert per > 0 and store.bytes == 4 * per
    kids = store.fork(root, 2)
    forward_items(p.model, store, [(kids[0], [9]), (kids[1], [10, 11])])
    assert store.bytes == 7 * per  # the children read the root in place: no copy of its 4 slots
    store.truncate(kids[1], 1)  # a rewind gives its slot back
    assert store.bytes == 6 * per and store.peak_bytes == 7 * per
    store.release(root)
    assert store.bytes == 6 * per, "the children still read the root's slots"
    for k in kids:
        store.release(k)
    assert store.bytes == 0 and root.freed
    assert store.pool.occupied[:, 1:].sum() == 0


def test_released_handles_refuse_use_and_double_release():
    p, store = _store()
    root = store.insert(None)
    forward_items(p.model, store, [(root, [5, 6])])
    store.release(root)
    with pytest.raises(ValueError, match="already released"):
        store.release(root)
    with pytest.raises(ValueError, match="freed|released"):
        store.fork(root, 1)
    with pytest.raises(ValueError, match="freed|released"):
        store.extend(root, [3])


def test_truncate_and_extend_refuse_a_handle_with_children():
    p, store = _store()
    root = store.insert(None)
    forward_items(p.model, store, [(root, [5, 6, 7])])
    store.fork(root, 1)
    with pytest.raises(ValueError, match="children or locks"):
        store.truncate(root, 1)
    with pytest.raises(ValueError, match="children or locks"):
        store.extend(root, [1])
    with pytest.raises(ValueError, match="n >= 1"):
        store.fork(root, 0)


def test_match_finds_the_longest_cached_prefix_and_refuses_an_empty_query():
    p, store = _store()
    a, b = store.insert(None, cached=True), store.insert(None, cached=True)
    forward_items(p.model, store, [(a, [1, 2, 3, 4]), (b, [1, 2, 9])])
    assert store.match([1, 2, 3, 4, 5]) == (a, 4)
    assert store.match([1, 2, 9, 9]) == (b, 3)
    assert store.match([7]) == (None, 0)
    with pytest.raises(ValueError, match="at least one token"):
        store.match([])


def test_evict_frees_released_cached_handles_and_refuses_locked_bytes():
    p, store = _store()
    a, b = store.insert(None, cached=True), store.insert(None, cached=True)
    forward_items(p.model, store, [(a, [1, 2, 3]), (b, [4, 5])])
    per = store.pool.bytes_per_slot
    store.release(a)
    store.lock(b)
    store.release(b)
    assert store.bytes == 5 * per, "released cached handles stay until evicted"
    assert store.evictable_bytes() == 3 * per
    with pytest.raises(ValueError, match="locked or in use"):
        store.evict(4 * per)
    assert store.evict(3 * per) == 3 * per and store.bytes == 2 * per
    assert store.match([1, 2, 3]) == (b, 0) or store.match([1, 2, 3])[0] is None
    store.unlock(b)
    with pytest.raises(ValueError, match="holds no lock"):
        store.unlock(b)
    assert store.evict(2 * per) == 2 * per and store.bytes == 0
    with pytest.raises(ValueError, match="nbytes >= 0"):
        store.evict(-1)


def test_prefill_runs_a_shared_prefix_once_and_copies_it_exactly():
    p = lively_policy(seed=12)
    store = new_store(p.model)
    shared = list(range(5, 45))
    prompts = [shared + [50, 51], shared + [52], shared[:10]]
    roots, logits, hidden, run = prefill(p.model, store, prompts, share_min=32)
    assert run[0] == 40 + 2 and run[1] == 1 and run[2] == 10  # the 40 shared tokens ran once
    for i, pr in enumerate(prompts):
        ref = p.model(input_ids=torch.tensor([pr]))
        torch.testing.assert_close(logits[i], ref.logits[0, -1], atol=1e-4, rtol=1e-4)
    # a later call matches the cached prefix across problems: nothing of it runs again
    more, logits2, _, run2 = prefill(p.model, store, [shared + [53, 54]], share_min=32)
    assert run2 == [2]
    torch.testing.assert_close(logits2[0], p.model(input_ids=torch.tensor([shared + [53, 54]])).logits[0, -1],
                               atol=1e-4, rtol=1e-4)
    assert store.match(shared + [1])[1] == 40


def test_rewind_counter_is_the_layout_simulation():
    """Decoding's rewind bookkeeping and the training layout run the same simulation."""
    b = 99
    ids = [1, 2, 3, 4, b, b, 5, 6, b, b, b, b, 7, b]
    prompt_len = 2
    lay = cache_layout(ids, b, prompt_len=prompt_len)
    sim, cache = RewindCounter(), list(ids[:prompt_len])
    for t, tok in enumerate(ids[prompt_len:], start=prompt_len):
        closed = sim.feed(tok == b)
        if closed:
            del cache[len(cache) - sum(closed):]
        assert len(cache) == int(lay.position_ids[t]), f"position of token {t}"
        cache.append(tok)


def test_rewind_batch_frees_the_deleted_slots():
    p = lively_policy(seed=13)
    store = new_store(p.model)
    roots, _, _, _ = prefill(p.model, store, [[5, 6, 7]])
    row = store.insert(roots[0])
    batch = RewindBatch(p.model, store, [row], p.backtrack_id)
    for t in (10, 11, p.backtrack_id, p.backtrack_id):
        batch.feed([t])
    assert row.tokens == [10, 11, p.backtrack_id, p.backtrack_id]
    _, _, deleted = batch.feed([12])
    assert deleted == [2] and row.tokens == [12] and store.live_slots == 4


def test_store_without_a_write_counts_zero_bytes():
    store = KVStore(2, torch.device("cpu"))
    h = store.insert(None)
    assert store.bytes == 0 and store.capacity_bytes == 0
    store.release(h)


def test_owner_bytes_meter_each_tree_as_the_store_counts_all():
    p, store = _store()
    a, b = store.insert(None), store.insert(None, owner=("problem", 1))
    forward_items(p.model, store, [(a, [5, 6, 7]), (b, [8, 9])])
    per = store.pool.bytes_per_slot
    assert store.owner_bytes(a.lane) == 3 * per and store.owner_bytes(("problem", 1)) == 2 * per
    kid = store.fork(a, 1)[0]
    forward_items(p.model, store, [(kid, [1, 2])])
    assert kid.owner == a.owner and store.owner_bytes(a.lane) == 5 * per
    with pytest.raises(ValueError, match="parent's owner"):
        store.insert(a, owner="someone else")
    store.truncate(kid, 2)
    assert store.owner_bytes(a.lane) == 3 * per and store.owner_peak_bytes(a.lane) == 5 * per
    assert store.owner_bytes(a.lane) + store.owner_bytes(("problem", 1)) == store.bytes
    for h in (kid, a, b):
        store.release(h)
    assert store.owner_bytes(a.lane) == 0 and store.owner_peak_bytes(("problem", 1)) == 2 * per
    c = store.insert(None)  # a lane taken afresh meters from zero
    assert c.lane == a.lane and store.owner_peak_bytes(c.lane) == 0


def test_a_shared_prefix_is_held_once_and_read_in_place_from_its_lane():
    p = lively_policy(seed=12)
    store = new_store(p.model)
    shared = list(range(5, 45))
    prompts = [shared + [50, 51], shared + [52], shared + [53, 54, 55]]
    roots, logits, _, _ = prefill(p.model, store, prompts, share_min=32)
    per = store.pool.bytes_per_slot
    assert store.bytes == (40 + 2 + 1 + 3) * per, "the 40 shared tokens are held once, not once per prompt"
    assert len({r.lane for r in roots}) == 3 and all(r.base is not None and r.base.lane != r.lane for r in roots)
    assert [store.owner_bytes(r.owner) for r in roots] == [2 * per, 1 * per, 3 * per]
    # a child decodes over the prefix read from the other lane exactly as over a full forward
    kid = store.fork(roots[1], 1)[0]
    out, _ = forward_items(p.model, store, [(kid, [60, 61])])
    torch.testing.assert_close(out[0], p.model(input_ids=torch.tensor([prompts[1] + [60, 61]])).logits[0, -1],
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="another lane"):
        store.branch(roots[0])
    with pytest.raises(ValueError, match="another lane"):
        store.copy_prefix(roots[0], 1)
    for h in (kid, *roots):
        store.release(h)
    assert store.bytes == 40 * per, "the cached prefix stays (matchable) until evicted"
    assert store.evict(40 * per) == 40 * per and store.bytes == 0


def test_forwards_run_in_inference_mode_and_the_store_stays_usable_outside_it():
    """Forwards write the KV buffers in inference mode (less per-op overhead); bookkeeping tensors
    stay normal tensors, so store operations and training on the outputs work outside it."""
    p = lively_policy(seed=14)
    store = new_store(p.model)
    roots, _, _, _ = prefill(p.model, store, [[5, 6, 7, 8]])
    row = store.insert(roots[0])
    logits, hidden = forward_items(p.model, store, [(row, [9, 10, 11])])
    assert store.pool.keys[0].is_inference() and not store.pool.occupied.is_inference()
    assert not row.path_mask(store.pool.capacity).is_inference()
    store.truncate(row, 2)  # outside inference mode: bookkeeping and masks update in place
    copy = store.copy_prefix(row, 3)  # a KV copy outside a forward
    logits2, _ = forward_items(p.model, store, [(copy, [12])])
    ref = p.model(input_ids=torch.tensor([[5, 6, 7, 12]])).logits[0, -1]
    torch.testing.assert_close(logits2[0], ref, atol=1e-4, rtol=1e-4)
    head = torch.nn.Linear(hidden.shape[-1], 1)
    head(hidden).sum().backward()  # the outputs are normal tensors: a trained head may read them
    assert head.weight.grad is not None


def test_rewind_batch_outputs_are_normal_tensors():
    p = lively_policy(seed=15)
    store = new_store(p.model)
    roots, _, _, _ = prefill(p.model, store, [[5, 6, 7]])
    batch = RewindBatch(p.model, store, [store.insert(roots[0])], p.backtrack_id)
    logits, hidden, _ = batch.feed([9])
    with torch.inference_mode():
        logits2, hidden2, _ = batch.feed([10])
    assert not any(t.is_inference() for t in (logits, hidden, logits2, hidden2))
