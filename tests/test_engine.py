"""The search engine: KV segments shared along the tree, equal to from-scratch forwards."""

import pytest
import torch
from test_generate import lively_policy

from policy.generate import row_seed
from search.interfaces import PolicyEngine, StepRequest

Q = ["Tom has 3 apples and buys 4 more. How many?", "What is 6 times 7?"]


def grow(engine, depth=2, k=2, temperature=1.0, seed=0):
    """Expand every open node for ``depth`` rounds; returns {path: sample} and the prompts."""
    prompts = engine.start(Q)
    frontier = [((i,), p.state) for i, p in enumerate(prompts)]
    nodes = {}
    for _ in range(depth):
        reqs = [StepRequest(state=s, seeds=tuple(row_seed(seed, *path, j) for j in range(k))) for path, s in frontier]
        results = engine.expand(reqs, temperature=temperature, max_step_tokens=12)
        nxt = []
        for (path, _), res in zip(frontier, results):
            for j, smp in enumerate(res.samples):
                nodes[path + (j,)] = smp
                if smp.state is not None:
                    nxt.append((path + (j,), smp.state))
        frontier = nxt
    return nodes, prompts


def test_engine_satisfies_protocol():
    assert isinstance(lively_policy().engine(), PolicyEngine)


@pytest.mark.parametrize("bias", [0.0, 2.5])
def test_node_states_equal_from_scratch_forward(bias):
    p = lively_policy(seed=1)
    eng = p.engine(backtrack_bias=bias)  # a positive bias makes in-step rewinds frequent
    nodes, prompts = grow(eng, depth=3, k=2)
    assert len(nodes) >= 8
    checked = 0
    for smp in nodes.values():
        if smp.state is None:
            continue
        full = smp.state.path_tokens()
        out = p.model(input_ids=torch.tensor([full]), output_hidden_states=True)
        torch.testing.assert_close(smp.state.next_logits, out.logits[0, -1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(smp.hidden, out.hidden_states[-1][0, -1], atol=1e-4, rtol=1e-4)
        # the stored segment is the KV of exactly this node's alive tokens
        assert len(smp.state.kv.slots) == len(smp.state.kv.tokens) == len(smp.ids)
        checked += 1
    assert checked >= 4
    if bias:
        assert any(s.backtracks for s in nodes.values()), "expected in-step rewinds"


def test_shared_prefix_equals_recompute():
    p = lively_policy(seed=2)
    a, _ = grow(p.engine(share_kv=True), depth=3)
    b, _ = grow(p.engine(share_kv=False), depth=3)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].raw_ids == b[key].raw_ids
        assert a[key].logprob == pytest.approx(b[key].logprob, abs=1e-4)


def test_batched_expansion_equals_one_by_one():
    p = lively_policy(seed=3)
    eng = p.engine()
    prompts = eng.start(Q)
    reqs = [StepRequest(state=pr.state, seeds=(5, 6, 7)) for pr in prompts]
    together = eng.expand(reqs, temperature=1.0, max_step_tokens=10)
    for req, res in zip(reqs, together):
        alone = eng.expand([req], temperature=1.0, max_step_tokens=10)[0]
        assert [s.raw_ids for s in alone.samples] == [s.raw_ids for s in res.samples]


def test_siblings_sample_independently_and_seeds_reproduce():
    p = lively_policy(seed=4)
    eng = p.engine()
    root = eng.start(Q[:1])[0]
    res = eng.expand([StepRequest(state=root.state, seeds=(1, 2, 3, 4, 1))], temperature=1.0, max_step_tokens=10)[0]
    raws = [s.raw_ids for s in res.samples]
    assert raws[0] == raws[4], "same seed, same prefix: same child"
    assert len(set(raws[:4])) >= 3, "different seeds on a shared prefix must not all coincide"


def test_release_frees_kv_and_accounting():
    p = lively_policy(seed=5)
    eng = p.engine()
    nodes, prompts = grow(eng, depth=2, k=3)
    assert eng.kv_bytes > 0 and eng.peak_kv_bytes >= eng.kv_bytes
    for pr in prompts:
        eng.release(pr.state)
    assert eng.kv_bytes > 0, "children still need the prompt's KV"
    for smp in nodes.values():
        if smp.state is not None:
            eng.release(smp.state)
    assert eng.kv_bytes == 0
    assert all(pr.state.kv.freed for pr in prompts)


def test_tokens_run_accounting():
    p = lively_policy(seed=6)
    eng = p.engine(share_kv=True)
    root = eng.start(Q[:1])[0]
    res = eng.expand([StepRequest(state=root.state, seeds=(1, 2))], temperature=1.0, max_step_tokens=8)[0]
    fed = sum(len(s.raw_ids) - (0 if s.stop_reason in ("newline", "answer", "max_step_tokens") else 1)
              for s in res.samples)
    assert res.tokens_run == fed and res.tokens_saved == len(root.ids)
    eng2 = p.engine(share_kv=False)
    root2 = eng2.start(Q[:1])[0]
    res2 = eng2.expand([StepRequest(state=root2.state, seeds=(1, 2))], temperature=1.0, max_step_tokens=8)[0]
    assert res2.tokens_run == fed + len(root.ids) and res2.tokens_saved == 0


def test_rejected_when_run_crosses_step_start():
    p = lively_policy(seed=7)
    eng = p.engine(backtrack_bias=1e4)  # ⟨b⟩ first, always
    root = eng.start(Q[:1])[0]
    s = eng.expand([StepRequest(state=root.state, seeds=(0,))], temperature=0.0, max_step_tokens=8)[0].samples[0]
    assert s.rejected and s.state is None and s.stop_reason == "rejected" and s.ids == ()
