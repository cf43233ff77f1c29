"""``rewind generate --policy RUN "question"``: decode with rewinds; print the raw trace with the
backtracks visible (each ⟨b⟩ as ⌫) and the final text."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the problem, in quotes (formatted with the task's prompt template)")
    parser.add_argument("--policy", metavar="RUN", default=None,
                        help="a run folder or a policy folder / hub name (default: the default run)")
    parser.add_argument("--raw-prompt", action="store_true", help="use the text as the prompt, without the template")
    parser.add_argument("--soft", action="store_true", help="soft mode: ⟨b⟩ stays in the cache (ablation)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most generated tokens (default: 256)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--backtrack-bias", type=float, default=0.0, help="added to the ⟨b⟩ logit (default: 0)")
    parser.add_argument("--max-backtracks", type=int, default=64, help="cap on ⟨b⟩ per sequence (default: 64)")
    parser.add_argument("--json", action="store_true", help="print the Generation as JSON")


def _load(spec: str | None):
    from pathlib import Path

    from experiments.wiring import default_run_dir, load_run
    from policy import load_policy

    if spec is None:
        return load_run(default_run_dir(), with_verifier=False)[0]
    path = Path(spec)
    if path.is_dir() and ((path / "run.json").exists() or (path / "policy").is_dir()):
        return load_run(path, with_verifier=False)[0]
    return load_policy(spec)


def run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise ValueError("the question is empty")
    from policy.data import format_prompt
    from policy.generate import generate

    pol = _load(args.policy)
    prompt = args.question if args.raw_prompt else format_prompt(args.question)
    g = generate(pol, [prompt], rewind=not args.soft, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                 temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                 backtrack_bias=args.backtrack_bias, max_backtracks=args.max_backtracks)[0]
    if args.json:
        print(json.dumps({"raw_text": g.raw_text, "text": g.text, "raw_ids": g.raw_ids, "ids": g.ids,
                          "backtracks": [vars(e) for e in g.backtracks], "stop_reason": g.stop_reason,
                          "surplus_backtracks": g.surplus_backtracks, "backtrack_cap_hit": g.backtrack_cap_hit}))
        return 0
    from policy import BACKTRACK_TOKEN

    out = sys.stdout
    out.write("── raw trace (⌫ = ⟨b⟩) ──\n" + g.raw_text.replace(BACKTRACK_TOKEN, "⌫") + "\n")
    out.write("── final text ──\n" + g.text + "\n")
    n_b = sum(e.length for e in g.backtracks)
    out.write(f"── {len(g.raw_ids)} tokens, {len(g.backtracks)} rewinds ({n_b} ⟨b⟩, {g.surplus_backtracks} surplus), "
              f"stop: {g.stop_reason}{', ⟨b⟩ cap hit' if g.backtrack_cap_hit else ''}\n")
    return 0
