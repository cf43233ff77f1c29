"""The backtrack token, the character tokenizer, the tiny policy and the real loader."""

import pytest
import torch
from tiny_models import tiny_lm
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import policy
from policy import BACKTRACK_TOKEN, add_backtrack_token, char_tokenizer, load_policy, tiny_policy


def word_tokenizer(with_pad: bool = True) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "a", "b", "c", "7", "8"] + (["<pad>"] if with_pad else []))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {"pad_token": "<pad>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>", **kw)


def test_char_tokenizer_roundtrip(tmp_path):
    tok = char_tokenizer()
    add_backtrack_token(None, tok)
    text = "Tom has 3 apples.\n3*4=<<3*4=12>>12\n#### 12"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text) and tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.encode(text, add_special_tokens=False) == ids
    assert again.get_vocab()[BACKTRACK_TOKEN] == tok.get_vocab()[BACKTRACK_TOKEN]
    assert (again.pad_token_id, again.eos_token_id, again.bos_token_id) == (0, 2, 1)
    assert again.padding_side == "left"


def test_add_backtrack_token_resizes_with_mean_and_is_idempotent():
    model = tiny_lm("gpt2", vocab=8)
    tok = word_tokenizer()
    assert len(tok) == 8
    before = model.get_input_embeddings().weight.detach().clone()
    bid = add_backtrack_token(model, tok)
    assert bid == 8 and tok.encode(f"a {BACKTRACK_TOKEN} b", add_special_tokens=False) == [2, 8, 3]
    w = model.get_input_embeddings().weight
    assert w.shape[0] == 9
    torch.testing.assert_close(w[:8], before)
    torch.testing.assert_close(w[8], before.mean(0))
    # idempotent: same id, no further resize, weights untouched
    snapshot = w.detach().clone()
    assert add_backtrack_token(model, tok) == bid
    assert torch.equal(model.get_input_embeddings().weight, snapshot)


def test_add_backtrack_token_untied_output_rows():
    model = tiny_lm("llama", vocab=8)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn(8, 32))
    tok = word_tokenizer()
    out_before = model.lm_head.weight.detach().clone()
    bid = add_backtrack_token(model, tok)
    torch.testing.assert_close(model.get_output_embeddings().weight[bid], out_before.mean(0))


class SplittingTokenizer:
    """A tokenizer that accepts the added token but still splits it: add_backtrack_token must refuse."""

    def __init__(self):
        self.vocab = {"x": 0}

    def get_vocab(self):
        return dict(self.vocab)

    def add_tokens(self, toks, special_tokens=False):
        self.vocab[str(toks[0])] = len(self.vocab)

    def encode(self, text, add_special_tokens=False):
        return [0] * len(text)


def test_add_backtrack_token_refuses_a_splitting_tokenizer():
    with pytest.raises(ValueError, match="single id"):
        add_backtrack_token(None, SplittingTokenizer())


def test_tiny_policy_save_load_roundtrip(tmp_path):
    p = tiny_policy(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1)
    assert p.backtrack_id == len(p.tokenizer) - 1
    p.save(tmp_path / "pol")
    q = load_policy(tmp_path / "pol")
    assert q.backtrack_id == p.backtrack_id
    x = torch.tensor([[5, 6, 7, p.backtrack_id]])
    with torch.no_grad():
        torch.testing.assert_close(p.model(x).logits, q.model(x).logits)
    # no temporary folders left behind
    assert [c.name for c in tmp_path.iterdir()] == ["pol"]


def test_load_policy_adds_backtrack_and_pad(tmp_path):
    model = tiny_lm("gpt2", vocab=7)
    tok = word_tokenizer(with_pad=False)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    p = load_policy(tmp_path)
    assert p.tokenizer.pad_token == "</s>"  # documented fallback: eos as pad
    assert p.backtrack_id == 7 and p.model.get_input_embeddings().weight.shape[0] == 8


def test_policy_without_pad_or_eos_is_refused():
    tok = word_tokenizer(with_pad=False)
    tok.eos_token = None
    with pytest.raises(ValueError, match="no pad token"):
        policy.Policy(model=tiny_lm("gpt2", vocab=8), tokenizer=tok)


def test_load_policy_errors(tmp_path):
    with pytest.raises(ValueError, match="not a policy checkpoint"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match="hub is"):
        load_policy("no-such-org/no-such-model-xyz")
    p = tiny_policy(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    p.save(tmp_path / "old")
    meta = tmp_path / "old" / "rewind_policy.json"
    meta.write_text(meta.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="format version 99"):
        load_policy(tmp_path / "old")


def test_out_of_vocab_ids_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        policy.cache_layout([1, 2, 500], 3, vocab_size=101)
