"""The cost of scoring with the head during decoding, relative to decoding itself (a benchmark, not a test).

The head reads the hidden state every forward already returns (``generate``'s ``on_forward``
hook), so its cost is one small MLP per fed token: ``python -m verifier.overhead RUN [VERIFIER]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from policy.data import format_prompt, generate_problems
from policy.generate import generate
from policy.model import Policy
from verifier.head import VerifierHead

__all__ = ["scoring_overhead"]


def scoring_overhead(policy: Policy, head: VerifierHead, *, num_prompts: int = 16, max_new_tokens: int = 128,
                     repeats: int = 3, seed: int = 0) -> dict:
    """Median wall time of greedy decoding without and with the head scoring every fed token's state.

    Returns ``{"decode_s", "decode_with_head_s", "head_s", "overhead"}``; ``overhead`` is the
    head's own time as a share of plain decoding (``head_s / decode_s``)."""
    prompts = [format_prompt(p.question) for p in generate_problems(num_prompts, seed=seed, split="test")]
    head_time = [0.0]

    def on_forward(rows, logits, hidden):
        t0 = time.perf_counter()
        head.score(hidden)
        head_time[0] += time.perf_counter() - t0

    plain, scored, heads = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(policy, prompts, max_new_tokens=max_new_tokens, batch_size=num_prompts)
        plain.append(time.perf_counter() - t0)
        head_time[0] = 0.0
        t0 = time.perf_counter()
        generate(policy, prompts, max_new_tokens=max_new_tokens, batch_size=num_prompts, on_forward=on_forward)
        scored.append(time.perf_counter() - t0)
        heads.append(head_time[0])
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"decode_s": med(plain), "decode_with_head_s": med(scored), "head_s": med(heads),
            "overhead": med(heads) / med(plain), "device": str(policy.device), "num_prompts": num_prompts,
            "max_new_tokens": max_new_tokens}


def _main() -> None:
    from verifier.head import load_verifier
    from verifier.train import load_frozen_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="train-policy run folder, policy folder, or 'tiny'")
    parser.add_argument("verifier", nargs="?", help="train-verifier run folder (default: a fresh head)")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    policy = load_frozen_policy(args.policy)
    head = load_verifier(args.verifier, policy) if args.verifier else VerifierHead(policy.hidden_size)
    with torch.no_grad():
        print(json.dumps(scoring_overhead(policy, head, num_prompts=args.num_prompts,
                                          max_new_tokens=args.max_new_tokens), indent=2))


if __name__ == "__main__":
    _main()
