"""Which problems a verifier learns from, and their split by problem id.

Never the policy's own training problems (issue 18): on the built-in task the generator's
``validation`` split, on GSM8K the *tail* of the train file (the policy trains on its head).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from policy.data import generate_problems, load_gsm8k
from policy.data.problems import Problem

__all__ = ["reference_problems", "split_problems", "token_problems", "verifier_problems"]


def verifier_problems(task: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems the policy did not train on."""
    if task == "builtin":
        return list(generate_problems(n, seed=seed, split="validation"))
    problems = list(load_gsm8k("train"))
    return problems[-n:]


def reference_problems(task: str, n: int, seed: int, *, exclude: set[str]) -> list[Problem]:
    """``n`` problems whose reference solutions the step verifier may learn from: never the policy's
    training problems, and no question in ``exclude`` (the verifier's validation and test problems)."""
    if n <= 0:
        return []
    if task == "builtin":
        pool = generate_problems(n + len(exclude), seed=seed + 7919, split="validation")
    else:
        pool = verifier_problems(task, n + len(exclude), seed)
    return [p for p in pool if p.question not in exclude][:n]


def token_problems(task: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems whose reference solutions teach the verifier arithmetic by their tokens alone
    (``verifier.token_steps``): the policy's *training* split, so never a question the verifier is
    validated or tested on (no policy forward reads them, so the rule above does not apply)."""
    if n <= 0:
        return []
    if task == "builtin":
        return list(generate_problems(n, seed=seed + 31337, split="train"))
    return list(load_gsm8k("train"))[:n]


def split_problems(ids: Sequence[str], *, test_share: float, val_share: float, seed: int) -> dict[str, set[str]]:
    """Deterministic split of problem ids into ``train``/``val``/``test`` (each non-empty)."""
    ids = sorted(set(ids))
    if len(ids) < 3:
        raise ValueError(f"need at least 3 problems to split into train/val/test, got {len(ids)}")
    random.Random(f"verifier-split:{seed}").shuffle(ids)
    n_test = min(len(ids) - 2, max(1, round(test_share * len(ids))))
    n_val = min(len(ids) - n_test - 1, max(1, round(val_share * len(ids))))
    return {"test": set(ids[:n_test]), "val": set(ids[n_test:n_test + n_val]), "train": set(ids[n_test + n_val:])}
