"""The collator: its docstring's worked example, exact; the hard layout's loss equivalence; bad input."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import VOCAB, tiny_lm

from policy import apply_backspaces
from policy.collator import IGNORE_INDEX, Collator

X = IGNORE_INDEX
A = {"input_ids": [10, 11, 12, 13, 99, 14, 2], "segments": [0, 0, 1, 2, 3, 4, 1],
     "prompt_len": 2, "clean_ids": [10, 11, 12, 14, 2]}
B = {"input_ids": [10, 11, 12, 2], "segments": [0, 0, 1, 1], "prompt_len": 2, "clean_ids": [10, 11, 12, 2]}


def collate(mode, **kw):
    return Collator(mode=mode, pad_token_id=0, backtrack_id=99, **kw)([A, B])


def test_docstring_example_clean():
    out = collate("clean")
    assert out["input_ids"].tolist() == [[10, 11, 12, 14, 2], [10, 11, 12, 2, 0]]
    assert out["labels"].tolist() == [[X, X, 12, 14, 2], [X, X, 12, 2, X]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]]


def test_docstring_example_naive_and_masked():
    naive, masked = collate("naive"), collate("masked")
    for out in (naive, masked):
        assert out["input_ids"].tolist() == [[10, 11, 12, 13, 99, 14, 2], [10, 11, 12, 2, 0, 0, 0]]
        assert out["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
        assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 0, 0, 0]]
        assert out["labels"][1].tolist() == [X, X, 12, 2, X, X, X]
    assert naive["labels"][0].tolist() == [X, X, 12, 13, 99, 14, 2]
    assert masked["labels"][0].tolist() == [X, X, 12, X, 99, 14, 2]


def test_docstring_example_hard():
    out = collate("hard")
    assert out["input_ids"].tolist() == collate("masked")["input_ids"].tolist()
    assert out["labels"].tolist() == collate("masked")["labels"].tolist()
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4], [0, 1, 2, 3, 0, 0, 0]]
    rows_a = ["1000000", "1100000", "1110000", "1111000", "1111100", "1110010", "1110011"]
    rows_b = ["1000000", "1100000", "1110000", "1111000", "0000100", "0000010", "0000001"]
    want = torch.tensor([[[int(c) for c in r] for r in rows] for rows in (rows_a, rows_b)], dtype=torch.bool)
    mask = out["attention_mask"]
    assert mask.shape == (2, 1, 7, 7) and mask.dtype == torch.float32
    assert torch.equal(mask[:, 0] == 0, want)
    assert (mask[:, 0][~want] == torch.finfo(torch.float32).min).all()
    boolean = collate("hard", attn_form="bool")["attention_mask"]
    assert boolean.dtype == torch.bool and torch.equal(boolean[:, 0], want)


def test_accepts_records_as_well_as_rows():
    from types import SimpleNamespace

    out = Collator(mode="hard", pad_token_id=0, backtrack_id=99)([SimpleNamespace(**A), B])
    assert torch.equal(out["attention_mask"], collate("hard")["attention_mask"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'segments' field"):
        Collator(mode="masked", pad_token_id=0, backtrack_id=99)([{"input_ids": [1, 2], "prompt_len": 1}])
    with pytest.raises(ValueError, match="no backtrack token"):
        Collator(mode="hard", pad_token_id=0, backtrack_id=None)
    with pytest.raises(ValueError, match="context of 5"):
        Collator(mode="naive", pad_token_id=0, backtrack_id=99, max_length=5)([A])
    with pytest.raises(ValueError, match="unknown training mode"):
        Collator(mode="dpo", pad_token_id=0, backtrack_id=99)
    # clean needs no ⟨b⟩
    assert Collator(mode="clean", pad_token_id=0)([A])["input_ids"].shape == (1, 5)


def per_token_loss(model, batch):
    """Loss of predicting ``input_ids[t]`` from the state at ``t - 1``, ``[B, L]`` (0 where no label)."""
    kw = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**kw).logits[:, :-1]  # (B, L-1, V)
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=X, reduction="none")
    return F.pad(loss, (1, 0))  # (B, L), aligned with labels


BT = VOCAB - 1
# prompt 4, clean 3, error 3, ⟨b⟩×3, correction 3, clean 3
SEQ = [5, 6, 7, 8, 20, 21, 22, 30, 31, 32, BT, BT, BT, 40, 41, 42, 23, 24, 25]
SEG = [0] * 4 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [1] * 3


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hard_loss_on_corrections_equals_clean_forward(attn):
    """DESIGN §1: every target predicted from a state at or after the first correction token has the
    loss it has in a clean forward on the effective sequence (the first correction token is chosen
    from the last ⟨b⟩'s state, which saw the error, so it is the one exception)."""
    model = tiny_lm("llama", attn=attn).float()
    clean = apply_backspaces(SEQ, BT, prompt_len=4)
    ex = {"input_ids": SEQ, "segments": SEG, "prompt_len": 4, "clean_ids": clean}
    other = {"input_ids": SEQ[:9], "segments": SEG[:9], "prompt_len": 4, "clean_ids": SEQ[:9]}  # forces padding
    hard = per_token_loss(model, Collator(mode="hard", pad_token_id=0, backtrack_id=BT)([ex, other]))[0]
    ref = per_token_loss(model, Collator(mode="clean", pad_token_id=0)([ex]))[0]
    first_corr = SEG.index(4)
    # raw index t >= first_corr + 1 maps to clean index t - 6 (3 error + 3 ⟨b⟩ removed)
    got = hard[first_corr + 1 : len(SEQ)]
    want = ref[first_corr + 1 - 6 : len(clean)]
    assert got.shape == want.shape and len(got) == 5
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # and the causal `masked` layout does not have this property: the correction sees the error
    masked = per_token_loss(model, Collator(mode="masked", pad_token_id=0, backtrack_id=BT)([ex]))[0]
    assert not torch.allclose(masked[first_corr + 1 : len(SEQ)], want, atol=1e-4)


def test_only_naive_puts_loss_on_error_tokens():
    model = tiny_lm("llama")
    ex = {"input_ids": SEQ, "segments": SEG, "prompt_len": 4, "clean_ids": apply_backspaces(SEQ, BT, prompt_len=4)}
    errors = [t for t, s in enumerate(SEG) if s == 2]
    for mode in ("naive", "masked", "hard"):
        loss = per_token_loss(model, Collator(mode=mode, pad_token_id=0, backtrack_id=BT)([ex]))[0]
        on_errors = loss[errors]
        assert (on_errors > 0).all() if mode == "naive" else (on_errors == 0).all(), mode
        assert (loss[SEG.index(3)] > 0), f"{mode}: the first ⟨b⟩ must keep its loss"
    clean = Collator(mode="clean", pad_token_id=0)([ex])
    assert 30 not in clean["input_ids"][0].tolist()
