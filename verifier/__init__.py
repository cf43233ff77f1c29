"""Rewind's verifier: a small head on the policy's hidden states predicting P(backtrack) (DESIGN §4),
its labels, its training and its diagnostics.

Importing this package loads no model: the training pieces live in ``verifier.train``.
"""

from verifier.head import VERIFIER_FORMAT_VERSION, VerifierHead, load_verifier, score, tokenizer_fingerprint

__all__ = ["VERIFIER_FORMAT_VERSION", "VerifierHead", "load_verifier", "score", "tokenizer_fingerprint"]
