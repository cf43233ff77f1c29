"""A character-level tokenizer for the built-in task that is a real transformers tokenizer.

It is a ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model whose pre-tokenizer
splits every character, so ``AutoTokenizer.from_pretrained`` loads a saved copy with no custom
code. Every printable ASCII character and the newline are in the vocabulary; anything else maps
to ``<unk>``.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

__all__ = ["CHAR_VOCAB", "char_tokenizer"]

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Printable ASCII without the vertical whitespace that GSM8K never uses, plus "\n" (the step separator).
CHAR_VOCAB = SPECIALS + ["\n"] + [c for c in string.printable if c not in "\n\r\x0b\x0c\t"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character tokenizer (pad/bos/eos/unk set; ⟨b⟩ is added by ``add_backtrack_token``)."""
    vocab = {tok: i for i, tok in enumerate(CHAR_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join with no separator
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    return tok
