"""``load_frozen_policy``: the policy a verifier is trained on, loaded frozen (eval, no grad)."""

from __future__ import annotations

from policy.model import Policy, load_policy, tiny_policy

__all__ = ["load_frozen_policy"]


def load_frozen_policy(spec: str) -> Policy:
    """``'tiny'`` or anything ``load_policy`` takes (a run folder, a policy or adapter folder, a
    ``.gguf`` file, a hub name: ``policy.locate`` resolves it); eval, no grad."""
    policy = tiny_policy() if spec == "tiny" else load_policy(spec)
    policy.model.eval()
    policy.model.requires_grad_(False)
    return policy
