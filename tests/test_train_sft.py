"""SFT on the Trainer: one step moves the parameters in every mode; bad input fails before training;
checkpoints resume from the last complete one."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from policy import apply_backspaces, char_tokenizer, load_policy, tiny_policy
from policy.model import Policy
from policy.sft import (
    COMPLETE_MARKER,
    fit,
    last_complete_checkpoint,
    resolve_policy_dir,
    start_policy,
    training_arguments,
)
from policy.train_config import TrainConfig

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_positions=128)


def toy_rows(tokenizer, bid: int, n: int) -> list[dict]:
    """Hand-built segmented examples: ``a+b=?`` → ``a+b=c`` with one wrong digit, ⟨b⟩, the fix."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    eos = tokenizer.eos_token_id
    rows = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 5
        prompt, head, wrong, right = enc(f"{a}+{b}=?\n"), enc(f"{a}+{b}="), enc(str(a + b + 1)), enc(str(a + b))
        ids = prompt + head + wrong + [bid] * len(wrong) + right + [eos]
        seg = [0] * len(prompt) + [1] * len(head) + [2] * len(wrong) + [3] * len(wrong) + [4] * len(right) + [1]
        clean = apply_backspaces(ids, bid, prompt_len=len(prompt))
        assert clean == prompt + head + right + [eos]
        rows.append({"input_ids": ids, "segments": seg, "prompt_len": len(prompt), "clean_ids": clean})
    return rows


def toy_policy(attn="sdpa"):
    p = tiny_policy(**TINY, attn_implementation=attn)
    return p


def config(tmp_path, mode, **kw):
    base = dict(out=str(tmp_path / mode), mode=mode, max_steps=1, batch_size=4, lr=1e-2, warmup_ratio=0.0,
                logging_steps=1, eval_steps=1000, save_steps=1000, precision="fp32")
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["clean", "naive", "masked", "hard"])
def test_one_step_changes_every_parameter_tensor(tmp_path, mode):
    policy = toy_policy()
    data = Dataset.from_list(toy_rows(policy.tokenizer, policy.backtrack_id, 8))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    out = fit(policy, data, data.select(range(4)), config(tmp_path, mode))
    moved = [n for n, p in policy.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(before), sorted(set(before) - set(moved))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and metrics["eval_loss"] > 0
    assert json.loads((out / "train_config.json").read_text())["mode"] == mode
    loaded = load_policy(out / "policy")
    assert loaded.backtrack_id == policy.backtrack_id
    ids = torch.tensor([data[0]["input_ids"]])
    torch.testing.assert_close(loaded.model(ids).logits, policy.model.eval()(ids).logits)


def test_hard_mode_trains_with_eager_attention_and_float_mask(tmp_path):
    policy = toy_policy("eager")
    data = Dataset.from_list(toy_rows(policy.tokenizer, policy.backtrack_id, 8))
    fit(policy, data, data, config(tmp_path, "hard", max_steps=3, attn_implementation="eager"))
    log = json.loads((tmp_path / "hard" / "metrics.json").read_text())["log_history"]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_bf16_autocast_and_length_grouped_batches_train_fp32_weights(tmp_path):
    policy = toy_policy()
    rows = toy_rows(policy.tokenizer, policy.backtrack_id, 16)
    data = Dataset.from_list(rows)
    cfg = config(tmp_path, "hard", max_steps=8, precision="bf16", group_by_length=True)
    args = training_arguments(cfg)
    assert args.train_sampling_strategy == "group_by_length" and args.bf16
    assert training_arguments(config(tmp_path, "hard")).train_sampling_strategy == "random"
    out = fit(policy, data, data.select(range(4)), cfg)
    log = json.loads((out / "metrics.json").read_text())["log_history"]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    loaded = load_policy(out / "policy")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_bad_input_fails_before_training(tmp_path):
    policy = toy_policy()
    rows = toy_rows(policy.tokenizer, policy.backtrack_id, 4)
    no_segments = Dataset.from_list([{k: r[k] for k in ("input_ids", "prompt_len", "clean_ids")} for r in rows])
    with pytest.raises(ValueError, match=r"no column\(s\) \['segments'\]"):
        fit(policy, no_segments, no_segments, config(tmp_path, "hard"))
    data = Dataset.from_list(rows)
    with pytest.raises(ValueError, match="longer than the context of 8"):
        fit(policy, data, data, config(tmp_path, "masked", max_length=8))
    tok = char_tokenizer()  # no ⟨b⟩
    bare = Policy(model=policy.model, tokenizer=tok)
    with pytest.raises(ValueError, match="no backtrack token"):
        fit(bare, data, data, config(tmp_path, "naive"))
    not_a_policy = tmp_path / "junk"
    not_a_policy.mkdir()
    (not_a_policy / "weights.bin").write_text("x")
    with pytest.raises(ValueError, match="not a policy checkpoint"):
        resolve_policy_dir(not_a_policy)
    with pytest.raises(ValueError, match="not a policy checkpoint"):
        start_policy(config(tmp_path, "hard", model=str(not_a_policy)))
    with pytest.raises(ValueError, match="needs --init"):
        config(tmp_path, "dpo")
    assert not (tmp_path / "hard" / "checkpoints").exists()  # nothing started


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_resume_skips_a_half_written_checkpoint(tmp_path):
    policy = toy_policy()
    data = Dataset.from_list(toy_rows(policy.tokenizer, policy.backtrack_id, 16))
    cfg = config(tmp_path, "hard", max_steps=6, save_steps=2)
    fit(policy, data, data.select(range(4)), cfg, trainer_kwargs={"callbacks": [StopAt(4)]})  # "killed" at 4
    ckpts = tmp_path / "hard" / "checkpoints"
    assert last_complete_checkpoint(ckpts).name == "checkpoint-4"
    # a kill in the middle of writing checkpoint-6: the folder exists but has no marker
    half = ckpts / "checkpoint-6"
    half.mkdir()
    (half / "config.json").write_text("{")
    assert last_complete_checkpoint(ckpts).name == "checkpoint-4"
    with pytest.raises(ValueError, match="pass --resume"):
        fit(toy_policy(), data, data, config(tmp_path, "hard", max_steps=6, save_steps=2))
    fit(toy_policy(), data, data.select(range(4)), config(tmp_path, "hard", max_steps=6, save_steps=2, resume=True))
    metrics = json.loads((tmp_path / "hard" / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-4" and metrics["global_step"] == 6
    assert (ckpts / "checkpoint-6" / COMPLETE_MARKER).exists()
    # the resumed run continues the same trajectory as an uninterrupted one
    straight = toy_policy()
    fit(straight, data, data.select(range(4)), config(tmp_path / "b", "hard", max_steps=6, save_steps=2))
    resumed = load_policy(tmp_path / "hard" / "policy").model
    for (n, p), q in zip(straight.model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=n)
