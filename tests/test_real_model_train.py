"""The real-model tier, training side, on SmolLM2-135M-Instruct (see tests/real_model.py).

Full and LoRA `hard` SFT steps through the real training path (``train_sft``), the bf16
checkpoint that must train in fp32 master weights, save → load round trips (adapter and merged),
a DPO step, verifier features and ``search.solve`` with a few-shot prompt. Each run is 1-2
optimiser steps on a handful of short built-in problems.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from policy import data, load_policy
from policy.dpo import model_sequence_logps, sequence_logps, train_dpo
from policy.model import merge_lora
from policy.prompts import few_shot
from policy.sft import train_sft
from policy.train_config import TrainConfig

SMALL = dict(task="builtin", num_problems=4, num_eval=2, batch_size=2, warmup_ratio=0.0, logging_steps=1,
             eval_steps=100, save_steps=100, max_length=256)


@pytest.fixture(scope="module")
def bf16_dir(smollm2_dir, tmp_path_factory):
    """SmolLM2 saved in bf16, the way Qwen2.5 and most recent checkpoints ship."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def full_run(bf16_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    train_sft(TrainConfig(out=str(out), mode="hard", model=str(bf16_dir), max_steps=2, lr=1e-5, **SMALL))
    return out


def _mean_row(weight: torch.Tensor, bid: int) -> torch.Tensor:
    return weight[:bid].float().mean(0)  # ⟨b⟩'s initial row (policy.backtrack.add_backtrack_token)


def test_bf16_checkpoint_trains_in_fp32_master_weights(bf16_dir, full_run):
    """Must show: two steps at lr 1e-5 change >= 90% of the weights outside the embeddings."""
    before = load_file(bf16_dir / "model.safetensors")
    after = load_file(full_run / "policy" / "model.safetensors")
    changed = total = 0
    for name, w in before.items():
        if "embed_tokens" in name or "lm_head" in name:
            continue
        assert w.dtype == torch.bfloat16 and after[name].dtype == torch.float32
        changed += int((after[name] != w.float()).sum())
        total += w.numel()
    assert total > 100e6 and changed / total >= 0.90, f"only {changed / total:.1%} of the weights moved"
    config = json.loads((full_run / "train_config.json").read_text())
    assert config["lr"] == 1e-5 and config["dtype"] == "fp32"
    emb = after["model.embed_tokens.weight"]
    bid = emb.shape[0] - 1
    assert not torch.equal(emb[bid], _mean_row(before["model.embed_tokens.weight"], bid))  # ⟨b⟩ row trained


def test_lora_hard_step_trains_the_backtrack_row_and_round_trips(smollm2_dir, tmp_path):
    out = tmp_path / "lora"
    train_sft(TrainConfig(out=str(out), mode="hard", model=str(smollm2_dir), max_steps=1, lora_r=4,
                          lora_targets="q_proj,v_proj", gradient_checkpointing=True, **SMALL))
    folder = out / "policy"
    assert (folder / "adapter_config.json").exists() and not (folder / "model.safetensors").exists()
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-4  # the LoRA default
    merged = load_policy(out)  # a run folder holding an adapter: base found, adapter applied and merged
    adapter = load_policy(folder, merge_adapter=False)
    assert adapter.is_adapter and not merged.is_adapter
    assert all(p.requires_grad for p in merged.model.parameters())  # a merged policy trains whole (DPO init)
    bid = merged.backtrack_id
    base = load_policy(smollm2_dir).model.get_input_embeddings().weight
    row = merged.model.get_input_embeddings().weight[bid]
    assert not torch.allclose(row, base[bid]) and torch.equal(merged.model.get_input_embeddings().weight[:bid],
                                                                base[:bid])
    ids = torch.tensor([merged.prompt_ids("What is 3 + 4?") + [bid]])
    with torch.no_grad():
        a, m = adapter.model(input_ids=ids).logits, merged.model(input_ids=ids).logits
        merge_lora(folder, tmp_path / "merged")
        again = load_policy(tmp_path / "merged")
        r = again.model(input_ids=ids).logits
    assert (a - m).abs().max() < 1e-3 and (r - m).abs().max() < 1e-4
    assert not again.is_adapter and again.backtrack_id == bid


def test_training_bad_inputs_fail_before_any_work(smollm2_dir, tmp_path):
    with pytest.raises(ValueError, match="LoRA target 'nope' matches no linear module"):
        train_sft(TrainConfig(out=str(tmp_path / "a"), model=str(smollm2_dir), lora_r=4, lora_targets="q_proj,nope",
                              **SMALL))
    with pytest.raises(ValueError, match=r"7473 problems; --num-problems 8000 \+ --num-eval 128"):
        train_sft(TrainConfig(out=str(tmp_path / "b"), model=str(smollm2_dir), task="gsm8k", num_problems=8000))
    with pytest.raises(ValueError, match="longer than the context of 64"):
        train_sft(TrainConfig(out=str(tmp_path / "c"), model=str(smollm2_dir),
                              **{**SMALL, "task": "gsm8k", "max_length": 64}))
    with pytest.raises(ValueError, match="chat template"):
        train_sft(TrainConfig(out=str(tmp_path / "d"), model="tiny", prompt_format="chat", **SMALL))
    assert not any((tmp_path / n / "checkpoints").exists() for n in "abcd")


def test_dpo_step_with_lean_log_probs(full_run, tmp_path):
    policy = load_policy(full_run)
    pairs = data.build_dataset("dpo", data.generate_problems(2, seed=3), policy.tokenizer, progress=False)
    from policy.dpo import DPOCollator

    batch = DPOCollator(pad_token_id=policy.tokenizer.pad_token_id, backtrack_id=policy.backtrack_id)(
        [pairs[0], pairs[1]])
    feed = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        lean, n = model_sequence_logps(policy.model, feed, batch["labels"])
        full, n2 = sequence_logps(policy.model(**feed).logits, batch["labels"])
    assert torch.allclose(lean, full, atol=1e-3) and torch.equal(n, n2)
    out = tmp_path / "dpo"
    train_dpo(TrainConfig(out=str(out), mode="dpo", init=str(full_run), max_steps=1, lr=1e-6,
                          **{**SMALL, "batch_size": 1}))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and any("dpo_loss" in h for h in metrics["log_history"])


def test_verifier_features_on_the_real_model(smollm2):
    from verifier.features import compute_features, sequence_hidden
    from verifier.labels import IGNORE, LabelledSequence

    problem = data.generate_problems(1, seed=5)[0]
    ex = data.inject_errors(problem, smollm2.tokenizer, seed=0)[0]
    ids = list(ex.input_ids)
    labels = tuple(IGNORE if t < ex.prompt_len else 0.0 for t in range(len(ids)))
    seq = LabelledSequence(ids=tuple(ids), prompt_len=ex.prompt_len, labels=labels,
                           step_end=tuple(False for _ in ids), problem_id=problem.id, source="injected")
    feats = compute_features(smollm2, [seq], progress=False)
    assert feats.hidden.shape == (len(ids) - ex.prompt_len, smollm2.hidden_size)
    hidden, p_b = sequence_hidden(smollm2, [(ids, ex.prompt_len)])[0]
    assert torch.allclose(feats.hidden, hidden[ex.prompt_len:]) and bool(((p_b >= 0) & (p_b <= 1)).all())


def test_search_solves_gsm8k_with_a_few_shot_prompt(smollm2):
    from search import solve_many

    exemplars = data.load_gsm8k("train")[:2]
    problems = data.load_gsm8k("test")[:2]
    fmt = few_shot(2, exemplars)
    engine = smollm2.engine(prompt_format=fmt)
    fed, extend = [], engine.store.extend

    def count(h, tokens):  # every token a forward runs is first appended to the store
        fed.append(len(tokens))
        return extend(h, tokens)

    engine.store.extend = count
    sols = solve_many(problems, policy=engine, verifier=None, strategy="greedy", max_depth=2,
                      max_step_tokens=12, threshold=1.0)
    assert sum(s.stats["tokens_run"] for s in sols) == sum(fed) > 0
    assert engine.peak_kv_bytes <= sum(s.stats["peak_kv_bytes"] for s in sols) + len(fmt.prefix_ids(smollm2.tokenizer)) * \
        engine.store.pool.bytes_per_slot, "the shared prefix is held once (read in place), not per problem"
    prefix = fmt.prefix_ids(smollm2.tokenizer)
    # the few-shot prefix shared by both problems runs once (issue 15): the first problem pays for it
    assert sols[0].stats["tokens_run"] >= len(prefix) > sols[1].stats["tokens_run"]
    for s, p in zip(sols, problems):
        root = s.tree.nodes[0] if hasattr(s.tree, "nodes") else None
        assert root is None or p.question in getattr(root, "text", p.question)


def test_lora_dpo_from_a_lora_run_keeps_the_sft_adapter(smollm2_dir, tmp_path):
    """DPO with a new adapter on a LoRA SFT run: the loaded DPO policy is SFT + DPO, not base + DPO
    (the init is merged into OUT/init-merged, the new adapter's base)."""
    sft = tmp_path / "sft"
    train_sft(TrainConfig(out=str(sft), mode="hard", model=str(smollm2_dir), max_steps=2, lr=5e-3, lora_r=4,
                          lora_targets="q_proj,v_proj", **SMALL))
    dpo = tmp_path / "dpo"
    train_dpo(TrainConfig(out=str(dpo), mode="dpo", init=str(sft), max_steps=1, lr=1e-9, lora_r=4,
                          lora_targets="q_proj,v_proj", **{**SMALL, "batch_size": 1}))
    base_of = json.loads((dpo / "policy" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base_of == str(dpo / "init-merged")
    sft_policy, dpo_policy = load_policy(sft), load_policy(dpo)
    bare = load_policy(smollm2_dir)
    ids = torch.tensor([sft_policy.prompt_ids("What is 3 + 4?")])
    with torch.no_grad():
        s, d, b = (p.model(input_ids=ids).logits for p in (sft_policy, dpo_policy, bare))
    assert (s - b).abs().max() > 1e-2  # the SFT adapter moved the model ...
    assert (d - s).abs().max() < 1e-3  # ... and a ~zero-lr DPO step on top keeps it
