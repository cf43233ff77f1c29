"""The real-model tier, inference side: SmolLM2-135M-Instruct (a Llama with GQA, tied embeddings, a
BPE tokenizer that splits digits, a chat template), obtained through the package index.

Layout ≡ physical cache crop, generate ≡ ``model.generate``, last hidden state without
``output_hidden_states``, injection round trips on GSM8K, prompt formats, user text that never
becomes control tokens (every entry point), and the loader's bad inputs.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DynamicCache

from policy import (
    BACKTRACK_TOKEN,
    apply_backspaces,
    backspace_trace,
    cache_layout,
    char_tokenizer,
    data,
    layout_to_4d_mask,
    load_policy,
)
from policy.collator import Collator
from policy.decoding import new_store, prefill
from policy.generate import generate
from policy.prompt_spec import prompt_format_from_spec
from policy.prompts import PLAIN, PromptFormat, encode_text, few_shot


@pytest.fixture(scope="module")
def gsm8k():
    return data.load_gsm8k("test")[:4]


def _hostile(policy) -> str:
    tok = policy.tokenizer
    return f"Tom has 3 {BACKTRACK_TOKEN} apples{tok.eos_token} and {tok.pad_token} 4 {tok.bos_token} pears. How many?"


def _control_ids(policy) -> set[int]:
    tok = policy.tokenizer
    return {policy.backtrack_id, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id} - {None}


# ---- equivalences ---------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_layout_equals_physical_crop(smollm2, attn):
    model, b = smollm2.model, smollm2.backtrack_id
    model.config._attn_implementation = attn
    try:
        prompt = smollm2.prompt_ids("What is 2 + 3?")
        ids = prompt + encode_text(smollm2.tokenizer, "2 + 4 = 6") + [b, b] + encode_text(smollm2.tokenizer, "3 = 5\n")
        lay = cache_layout(ids, b, prompt_len=len(prompt))
        with torch.no_grad():
            full = model(input_ids=torch.tensor([ids]), attention_mask=layout_to_4d_mask(lay.attention, torch.float32),
                         position_ids=lay.position_ids[None]).logits[0]
            trace = backspace_trace(ids, b, prompt_len=len(prompt))
            drop = {e.start + e.length: e.length + e.deleted for e in trace.events}
            cache, rows = DynamicCache(), []
            for t, tok in enumerate(ids):
                if t in drop:
                    cache.crop(-drop[t])  # physical removal of the deleted tokens and the run
                out = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True,
                            position_ids=torch.tensor([[cache.get_seq_length()]]))
                cache = out.cache
                rows.append(out.logits[0, -1])
        assert (full - torch.stack(rows)).abs().max() < 2e-3
    finally:
        model.config._attn_implementation = "sdpa"


def test_generate_equals_model_generate(smollm2, gsm8k):
    prompts = [smollm2.prompt_ids(p.question) for p in gsm8k[:2]]
    ours = generate(smollm2, prompts, max_new_tokens=12, stop_at_answer=False)
    for p, g in zip(prompts, ours):
        ref = smollm2.model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     max_new_tokens=12, do_sample=False, pad_token_id=smollm2.tokenizer.pad_token_id)
        ref_new = ref[0, len(p):].tolist()
        assert list(g.raw_ids) == ref_new[:len(g.raw_ids)] and len(g.raw_ids) >= 1


def test_decoding_reads_the_last_hidden_state_without_all_layers(smollm2):
    prompt = smollm2.prompt_ids("What is 7 times 6?")
    _, logits, hidden, _ = prefill(smollm2.model, new_store(smollm2.model), [prompt])
    with torch.no_grad():
        out = smollm2.model(input_ids=torch.tensor([prompt]), output_hidden_states=True)
    assert torch.allclose(hidden[0], out.hidden_states[-1][0, -1], atol=1e-4)
    assert torch.allclose(logits[0], out.logits[0, -1], atol=1e-3)


def test_injection_round_trips_on_gsm8k(smollm2, gsm8k):
    n = 0
    for p in gsm8k:
        prompt, solution = data.encode_problem(p, smollm2.tokenizer)
        for ex in data.inject_errors(p, smollm2.tokenizer, seed=0):
            assert apply_backspaces(list(ex.input_ids), smollm2.backtrack_id, prompt_len=ex.prompt_len) == \
                prompt + solution
            n += 1
    assert n >= len(gsm8k)


# ---- prompts and control tokens -----------------------------------------------------------
def test_user_text_never_becomes_control_tokens_at_any_entry_point(smollm2):
    tok, q = smollm2.tokenizer, _hostile(smollm2)
    control = _control_ids(smollm2)
    problem = data.Problem(question=q, solution=f"3 + 4 = <<3+4=7>>7 {BACKTRACK_TOKEN}{tok.eos_token}\n#### 7",
                           answer="7", id="hostile")
    prompt, solution = data.encode_problem(problem, tok)
    assert not control & set(prompt) and not control & set(solution[:-1])  # the last id is the real EOS
    assert not control & set(encode_text(tok, q)) and not control & set(smollm2.prompt_ids(q))
    fewshot = few_shot(1, [problem])  # exemplars are dataset text too
    assert not control & set(fewshot.encode(q, tok))
    # generate: a string prompt and the prompt it reports
    g = generate(smollm2, [q], max_new_tokens=1)[0]
    assert not control & set(g.prompt_ids)
    # the search engine's prompt
    assert not control & set(smollm2.engine().start([q])[0].ids)
    # dataset building and the collator
    rows = data.build_dataset("sft", [problem], tok, progress=False)
    assert len(rows) >= 1
    for row in rows:
        user = [t for t, s in zip(row["input_ids"], row["segments"]) if s == 0 or s == 1]  # PROMPT and CLEAN
        assert not control & set(user[:-1])
    batch = Collator(mode="hard", pad_token_id=tok.pad_token_id, backtrack_id=smollm2.backtrack_id)([rows[0]])
    assert batch["input_ids"].shape[1] == len(rows[0]["input_ids"])
    # the chat template's own markers are control tokens; the question's are not
    chat = PromptFormat(kind="chat")
    assert chat.encode(q, tok).count(tok.eos_token_id) == chat.encode("plain", tok).count(tok.eos_token_id)


def test_prompt_formats(smollm2, gsm8k):
    tok, q = smollm2.tokenizer, gsm8k[0].question
    assert PLAIN.encode(q, tok) == encode_text(tok, f"Question: {q}\nAnswer:\n")
    chat = PromptFormat(kind="chat").render(q, tok)
    assert chat.startswith("<|im_start|>") and q in chat and chat.endswith("assistant\n")
    shot = prompt_format_from_spec("fewshot:2", task="gsm8k")
    prefix = shot.prefix_ids(tok)
    assert shot.encode(q, tok)[:len(prefix)] == prefix and len(prefix) > 50  # one shared prompt prefix
    assert q not in "".join(e[0] for e in shot.exemplars)  # the exemplars are not the question
    assert PromptFormat.from_dict(json.loads(json.dumps(shot.to_dict()))) == shot


def test_prompt_format_bad_inputs(smollm2, tmp_path):
    with pytest.raises(ValueError, match="chat template"):
        PromptFormat(kind="chat").encode("q", char_tokenizer())
    with pytest.raises(ValueError, match=r"\{question\}"):
        PromptFormat(kind="template", template="no slot")
    with pytest.raises(ValueError, match="neither"):
        prompt_format_from_spec(str(tmp_path / "missing.txt"))
    (tmp_path / "t.txt").write_text("Solve: {question}\nSolution:\n")
    fmt = prompt_format_from_spec(str(tmp_path / "t.txt"))
    assert fmt.render("1+1?") == "Solve: 1+1?\nSolution:\n"


# ---- loading --------------------------------------------------------------------------------
def test_load_policy_accepts_folders_runs_and_gguf(smollm2_dir, tmp_path):
    from real_model import smollm2_gguf

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"policy": str(smollm2_dir)}))
    p = load_policy(tmp_path / "run", dtype="bfloat16")
    assert p.model.dtype == torch.bfloat16 and p.backtrack_id == len(p.tokenizer) - 1
    g = load_policy(smollm2_gguf())
    assert not hasattr(g.model.config, "quantization_config")  # dequantized: it can be saved and trained
    assert not any(t.is_meta for t in [*g.model.parameters(), *g.model.buffers()])
    assert torch.equal(g.model.get_input_embeddings().weight[:100],
                       load_policy(smollm2_dir).model.get_input_embeddings().weight[:100])


def test_loader_bad_inputs(smollm2_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file .* does not exist"):
        load_policy(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="GGUF file .* does not exist"):
        load_policy(smollm2_dir, gguf_file="nope.gguf")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(FileNotFoundError, match="trained on .*gone, which does not exist"):
        load_policy(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="names no base model"):
        load_policy(adapter)


def test_a_rewrite_prefix_redraws_the_step_token_for_token(smollm2, gsm8k):
    """The engine's rewrite path on a real model: a step's own alive prefix, fed back with the
    step's seed, redraws that step exactly (tokens, log-prob, hidden states); with a ban the token
    after the prefix changes."""
    from search.interfaces import StepRequest

    engine = smollm2.engine(share_kv=True)
    (prompt,) = engine.start([gsm8k[0].question])

    def draw(**kw):
        (res,) = engine.expand([StepRequest(state=prompt.state, seeds=(3,), **kw)], temperature=0.7,
                               max_step_tokens=24)
        return res.samples[0]

    first = draw()
    assert len(first.ids) >= 3 and smollm2.backtrack_id not in first.raw_ids
    k = len(first.ids) // 2
    again = draw(prefix=tuple(first.ids[:k]))
    assert again.raw_ids == first.raw_ids
    assert abs(again.logprob - first.logprob) < 1e-4
    torch.testing.assert_close(again.step_hidden, first.step_hidden, rtol=1e-4, atol=1e-4)
    banned = draw(prefix=tuple(first.ids[:k]), ban=first.ids[k])
    assert banned.raw_ids[:k] == first.ids[:k] and banned.raw_ids[k] != first.ids[k]
