"""Step-level DPO: the pair batch scores each side as it would alone; the loss starts at log 2 (policy =
reference); training widens the margin; bad input fails before training."""

import json
import math

import pytest
import torch
from datasets import Dataset
from test_train_sft import TINY, config

from policy import cache_layout, tiny_policy
from policy.dpo import DPOCollator, fit_dpo, init_policy, sequence_logps


def toy_pairs(tokenizer, bid, n):
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    pairs = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 5
        question = enc(f"{a}+{b}=?\n")
        wrong, right = enc(str(a + b + 1)), enc(str(a + b))
        pairs.append({"prompt_ids": question + enc(f"{a}+{b}=") + wrong, "prompt_len": len(question),
                      "chosen_ids": [bid] * len(wrong) + right + [tokenizer.eos_token_id],
                      "rejected_ids": enc("\n#### ") + wrong, "kind": "backtrack"})
    return pairs


def test_pair_batch_scores_each_side_as_alone():
    """Padding, batching and the chosen/rejected stacking change no log-prob: each row's summed
    completion log-prob equals a single unpadded forward with its own cache layout."""
    policy = tiny_policy(**TINY, attn_implementation="eager")
    pairs = toy_pairs(policy.tokenizer, policy.backtrack_id, 3)
    pairs[1]["prompt_ids"] = pairs[1]["prompt_ids"] + pairs[1]["prompt_ids"][-3:]  # uneven lengths
    batch = DPOCollator(pad_token_id=policy.tokenizer.pad_token_id, backtrack_id=policy.backtrack_id)(pairs)
    assert batch["input_ids"].shape[0] == 6
    model = policy.model.eval()
    with torch.no_grad():
        logp, n = sequence_logps(model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits,
                                 batch["labels"])
        for row, (pair, side) in enumerate([(p, s) for s in ("chosen_ids", "rejected_ids") for p in pairs]):
            ids = pair["prompt_ids"] + pair[side]
            lay = cache_layout(ids, policy.backtrack_id, prompt_len=pair["prompt_len"])
            mask = torch.where(lay.attention, 0.0, torch.finfo(torch.float32).min)[None, None]
            logits = model(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=lay.position_ids[None]).logits[0]
            P = len(pair["prompt_ids"])
            want = torch.log_softmax(logits[P - 1 : -1], -1).gather(-1, torch.tensor(pair[side])[:, None]).sum()
            assert n[row] == len(pair[side])
            torch.testing.assert_close(logp[row], want, atol=1e-4, rtol=0)


def test_dpo_starts_at_log2_and_widens_the_margin(tmp_path):
    policy = tiny_policy(**TINY)
    pairs = Dataset.from_list(toy_pairs(policy.tokenizer, policy.backtrack_id, 16))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    cfg = config(tmp_path, "dpo", init="unused", max_steps=8, batch_size=8, lr=3e-3, beta=0.5, nll_weight=0.0)
    out = fit_dpo(policy, pairs, pairs, cfg)
    assert all(not torch.equal(p.detach(), before[n]) for n, p in policy.model.named_parameters())
    log = json.loads((out / "metrics.json").read_text())["log_history"]
    steps = [r for r in log if "dpo_loss" in r]
    assert len(steps) == 8
    assert math.isclose(steps[0]["dpo_loss"], math.log(2), abs_tol=1e-5)  # policy == reference at step 0
    assert steps[-1]["reward_margin"] > 0 and steps[-1]["dpo_loss"] < math.log(2)
    final = json.loads((out / "metrics.json").read_text())
    assert final["eval_reward_accuracy"] > 0.5 and final["eval_dpo_loss"] < math.log(2)


def test_dpo_bad_input(tmp_path):
    policy = tiny_policy(**TINY)
    pairs = toy_pairs(policy.tokenizer, policy.backtrack_id, 4)
    no_rejected = Dataset.from_list([{k: v for k, v in p.items() if k != "rejected_ids"} for p in pairs])
    cfg = config(tmp_path, "dpo", init="unused")
    with pytest.raises(ValueError, match=r"no column\(s\) \['rejected_ids'\]"):
        fit_dpo(policy, no_rejected, no_rejected, cfg)
    with pytest.raises(ValueError, match="longer than the context of 10"):
        ds = Dataset.from_list(pairs)
        fit_dpo(policy, ds, ds, config(tmp_path, "dpo", init="unused", max_length=10))
    junk = tmp_path / "junk"
    junk.mkdir()
    with pytest.raises(ValueError, match="not a policy checkpoint"):
        init_policy(config(tmp_path, "dpo", init=str(junk)))
    with pytest.raises(FileNotFoundError):
        init_policy(config(tmp_path, "dpo", init=str(tmp_path / "nowhere")))
