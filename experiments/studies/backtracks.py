"""What the policy's own ⟨b⟩-runs did: fixed an error, harmed right text, or neither.

One classification, shared by ``rewind diagnose`` (sampled solutions) and the evaluations of the
plain decoders (``evaluate``'s ``decode`` rows carry it per problem, so ``rewind ablation`` can
report the mechanism without decoding again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from policy.layout import apply_backspaces
from verifier.labels import holds_error

__all__ = ["EFFECT_KEYS", "backtrack_effects", "with_rates"]

EFFECT_KEYS = ("runs", "fix", "harm", "other")


def backtrack_effects(policy, gens: Iterable) -> dict:
    """Per ⟨b⟩-run of ``gens`` (``policy.generate.Generation``): ``fix`` (it deleted an error and
    the alive text after its line is right), ``harm`` (it deleted text that held no error),
    ``other`` (it deleted an error, but its line is still wrong)."""
    tok, bid = policy.tokenizer, policy.backtrack_id
    fix = harm = other = 0
    for g in gens:
        plen = len(g.prompt_ids)
        ids = list(g.prompt_ids) + list(g.raw_ids)
        for ev in g.backtracks:
            start = plen + ev.start
            before = tok.decode(apply_backspaces(ids[:start], bid, prompt_len=plen)[plen:], skip_special_tokens=True)
            if not holds_error(before):
                harm += 1
                continue
            nl = next((j for j in range(start + ev.length, len(ids)) if "\n" in tok.decode([ids[j]])), len(ids) - 1)
            after = tok.decode(apply_backspaces(ids[:nl + 1], bid, prompt_len=plen)[plen:], skip_special_tokens=True)
            fix, other = (fix + 1, other) if not holds_error(after) else (fix, other + 1)
    return {"runs": fix + harm + other, "fix": fix, "harm": harm, "other": other}


def with_rates(counts: Mapping) -> dict:
    """``counts`` plus ``fix_rate`` and ``harm_rate`` (shares of all runs; None without runs)."""
    runs = counts["runs"]
    return {**counts, "fix_rate": counts["fix"] / runs if runs else None,
            "harm_rate": counts["harm"] / runs if runs else None}
