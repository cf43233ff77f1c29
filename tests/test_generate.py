"""Decoding with a physically rewinding KV cache (issue 5)."""

import pytest
import torch

import policy
from policy import cache_layout
from policy.generate import generate


def lively_policy(seed: int = 0, **kw) -> policy.Policy:
    """A tiny random policy whose greedy output is varied (large init), not one repeated token."""
    p = policy.tiny_policy(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seed=seed, **kw)
    with torch.no_grad():
        for prm in p.model.parameters():
            if prm.dim() > 1:
                prm.normal_(0, 0.35, generator=torch.Generator().manual_seed(seed))
    return p


PROMPTS = ["Question: Tom has 3 apples.\nAnswer:\n", "Q: 12*4?\n", "Question: a much longer prompt here, isn't it?\n"]


def hf_greedy(p, prompts, n, suppress):
    enc = p.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = p.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=p.tokenizer.pad_token_id,
                           eos_token_id=p.tokenizer.eos_token_id,
                           suppress_tokens=[p.backtrack_id] if suppress else None)
    rows = []
    for r in out[:, enc.input_ids.shape[1]:].tolist():
        if p.tokenizer.eos_token_id in r:
            r = r[: r.index(p.tokenizer.eos_token_id) + 1]
        rows.append(r)
    return rows


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_backtrack_greedy_equals_model_generate(batched, attn):
    p = lively_policy(attn_implementation=attn)
    n = 40
    groups = [PROMPTS] if batched else [[q] for q in PROMPTS]
    for group in groups:
        ours = generate(p, group, max_new_tokens=n, backtrack_bias=float("-inf"), stop_at_answer=False)
        ref = hf_greedy(p, group, n, suppress=True)
        assert [list(g.raw_ids) for g in ours] == ref
        assert all(len(set(g.raw_ids)) > 3 for g in ours), "degenerate output would make the test vacuous"


def test_no_backtrack_emitted_naturally_equals_model_generate():
    p = lively_policy(seed=3)
    ours = generate(p, PROMPTS, max_new_tokens=30, stop_at_answer=False)
    ref = hf_greedy(p, PROMPTS, 30, suppress=False)
    assert all(p.backtrack_id not in r for r in ref)
    assert [list(g.raw_ids) for g in ours] == ref


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_rewind_logits_equal_from_scratch_forward(attn):
    """⟨b⟩ forced often (large bias, sampling): at every step each row's logits equal a forward from
    scratch on the tokens alive in its cache at that moment, with positions 0..n-1."""
    p = lively_policy(seed=1, attn_implementation=attn)
    bid = p.backtrack_id
    seen: dict[int, list[torch.Tensor]] = {}

    def hook(rows, logits, hidden):
        for r, row in enumerate(rows):
            seen.setdefault(row, []).append(logits[r].clone())

    gens = generate(p, PROMPTS, max_new_tokens=24, do_sample=True, temperature=1.0, seed=7, backtrack_bias=3.0,
                    max_backtracks_per_step=4, stop_at_answer=False, on_forward=hook)
    runs = [tuple((e.start, e.length) for e in g.backtracks) for g in gens]
    assert sum(map(len, runs)) >= 3 and len(set(runs)) == len(runs), f"rows should rewind differently: {runs}"
    for i, g in enumerate(gens):
        full = list(g.prompt_ids) + list(g.raw_ids)
        lay = cache_layout(full, bid, prompt_len=len(g.prompt_ids))
        # logits after the prompt's last token, then after every fed token (the last chosen one is not fed)
        assert len(seen[i]) == len(g.raw_ids)
        fed = len(g.prompt_ids) - 1 + len(seen[i])
        for k, logits in enumerate(seen[i]):
            t = len(g.prompt_ids) - 1 + k  # raw index of the token whose forward produced these logits
            assert t < fed
            alive = lay.attention[t].nonzero().flatten().tolist()
            ref = p.model(input_ids=torch.tensor([[full[j] for j in alive]])).logits[0, -1]
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
        # the reported output is the backspaced raw sequence
        assert list(g.ids) == policy.apply_backspaces(full, bid, prompt_len=len(g.prompt_ids))[len(g.prompt_ids):]


def test_batched_equals_one_by_one_sampling():
    p = lively_policy(seed=2)
    kw = dict(max_new_tokens=25, do_sample=True, temperature=0.9, top_p=0.95, backtrack_bias=2.0,
              seeds=[11, 22, 33], stop_at_answer=False)
    together = generate(p, PROMPTS, **kw)
    alone = [generate(p, [q], **{**kw, "seeds": [s]})[0] for q, s in zip(PROMPTS, kw["seeds"])]
    assert [g.raw_ids for g in together] == [g.raw_ids for g in alone]
    for a, b in zip(together, alone):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def test_soft_mode_keeps_everything_in_cache():
    p = lively_policy(seed=1)
    hard = generate(p, PROMPTS[:1], max_new_tokens=20, do_sample=True, seed=5, backtrack_bias=3.0, stop_at_answer=False)
    soft = generate(p, PROMPTS[:1], rewind=False, max_new_tokens=20, do_sample=True, seed=5, backtrack_bias=3.0,
                    stop_at_answer=False)
    assert hard[0].backtracks, "need a rewind for the comparison"
    # identical until the first token after the first run, then the caches differ
    first = hard[0].backtracks[0]
    cut = first.start + first.length
    assert hard[0].raw_ids[: cut + 1] == soft[0].raw_ids[: cut + 1]
    assert hard[0].logprobs[: cut + 1] == pytest.approx(soft[0].logprobs[: cut + 1], abs=1e-5)
    assert soft[0].logprobs[cut + 1:] != pytest.approx(hard[0].logprobs[cut + 1:], abs=1e-5)


def test_backtrack_caps_and_surplus():
    p = lively_policy(seed=4)
    g = generate(p, PROMPTS[:2], max_new_tokens=30, backtrack_bias=50.0, max_backtracks=5, stop_at_answer=False)
    for x in g:
        assert x.raw_ids.count(p.backtrack_id) == 5 and x.backtrack_cap_hit
        assert x.surplus_backtracks == 5  # a run at the very start has nothing to delete: stops at the prompt
        assert x.stop_reason == "max_new_tokens"
    g = generate(p, PROMPTS[:1], max_new_tokens=30, backtrack_bias=50.0, max_backtracks_per_step=2,
                 max_backtracks=100, stop_at_answer=False)
    assert g[0].raw_ids.count(p.backtrack_id) <= 2 * (1 + g[0].text.count("\n"))


def test_stops_at_answer_line():
    p = lively_policy(seed=0)
    # A prompt whose forced continuation completes an answer line: feed it through token ids.
    gens = generate(p, PROMPTS[:1], max_new_tokens=5, stop_at_answer=True)
    assert gens[0].stop_reason in {"max_new_tokens", "eos", "answer"}
    from policy.generate import _answer_done

    tok = p.tokenizer
    assert _answer_done(tok, p.backtrack_id, tok.encode("3+4=7\n#### 7\n", add_special_tokens=False))
    assert not _answer_done(tok, p.backtrack_id, tok.encode("3+4=7\n####\n", add_special_tokens=False))


def test_bad_inputs():
    p = lively_policy()
    with pytest.raises(ValueError, match="empty"):
        generate(p, [])
    with pytest.raises(ValueError, match="list of strings"):
        generate(p, "just a string")
    with pytest.raises(ValueError, match="context"):
        generate(p, ["x" * 800])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(p, ["x"], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(p, ["x"], do_sample=True, temperature=0.0 - 1)
    q = lively_policy()
    with torch.no_grad():
        q.model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        generate(q, ["x"], max_new_tokens=3)
