"""Search on the real engine over a tiny random policy: strategy equivalences and KV sharing."""

from __future__ import annotations

import pytest

import search

Q = "Tom has 3 apples and buys 2 more. How many apples?"
KW = dict(threshold=1.0, max_depth=3, max_step_tokens=12)


@pytest.fixture(scope="module")
def policy():
    from policy import tiny_policy

    return tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)


def _rows(tree):
    return [(n.seed_path, n.raw_ids, n.status) for n in tree.nodes]


def test_beam_width_one_at_temperature_zero_is_greedy(policy):
    beam = search.solve(Q, strategy="beam", policy=policy, width=1, samples=1, temperature=0.0, **KW)
    greedy = search.solve(Q, strategy="greedy", policy=policy, **KW)
    assert _rows(beam.tree) == _rows(greedy.tree)
    assert beam.answer == greedy.answer and beam.text == greedy.text


def test_kv_sharing_changes_cost_not_samples(policy):
    shared = search.solve(Q, strategy="beam", policy=policy, width=2, samples=2, seed=1, **KW)
    plain = search.solve(Q, strategy="beam", policy=policy, width=2, samples=2, seed=1, share_kv=False, **KW)
    assert _rows(shared.tree) == _rows(plain.tree)
    # every token of the tree runs through the model once (a final EOS is never fed: nothing follows it)
    eos = sum(n.stop_reason == "eos" for n in shared.tree.nodes)
    assert shared.stats["tokens_in_tree"] - eos <= shared.stats["tokens_run"] <= shared.stats["tokens_in_tree"]
    assert plain.stats["tokens_run"] > shared.stats["tokens_run"]


def test_a_verifier_for_another_policy_is_refused(policy):
    class Head:
        hidden_size = 64

        def score(self, hidden):
            raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="another policy"):
        search.solve(Q, policy=policy, verifier=Head())
