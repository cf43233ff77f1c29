"""``rewind generate --policy SOURCE "question"``: decode with rewinds; print the raw trace with the
backtracks visible (each ⟨b⟩ as ⌫) and the final text.

The decoding flags are the fields of ``policy.generate.DecodeConfig`` (the defaults of
``generate()`` itself); ``--policy`` takes every source ``experiments.wiring`` resolves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from experiments.flags import add_config_flags, config_from_args
from experiments.wiring import load
from policy import BACKTRACK_TOKEN
from policy.data import format_prompt
from policy.generate import DecodeConfig, generate

__all__ = ["CONFIGS", "add_arguments", "run"]

CONFIGS = (DecodeConfig,)  # every flag but the question, --policy, --raw-prompt and --json is a field of these


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help="the problem, in quotes (formatted with the policy's prompt format)")
    parser.add_argument("--policy", metavar="SOURCE", default=None,
                        help="a run folder, a policy or adapter folder, a .gguf file or a hub name "
                             "(default: the default run)")
    parser.add_argument("--raw-prompt", action="store_true", help="use the text as the prompt, without the format")
    parser.add_argument("--json", action="store_true", help="print the Generation as JSON")
    add_config_flags(parser.add_argument_group("decoding (policy.generate.DecodeConfig)"), DecodeConfig)


def run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise ValueError("the question is empty")
    decode = config_from_args(args, DecodeConfig)
    pol, _ = load(args.policy, signal="policy")
    prompt = args.question if args.raw_prompt else format_prompt(args.question)
    g = generate(pol, [prompt], **dataclasses.asdict(decode))[0]
    if args.json:
        print(json.dumps({"raw_text": g.raw_text, "text": g.text, "raw_ids": g.raw_ids, "ids": g.ids,
                          "backtracks": [vars(e) for e in g.backtracks], "stop_reason": g.stop_reason,
                          "surplus_backtracks": g.surplus_backtracks, "backtrack_cap_hit": g.backtrack_cap_hit}))
        return 0
    out = sys.stdout
    out.write("── raw trace (⌫ = ⟨b⟩) ──\n" + g.raw_text.replace(BACKTRACK_TOKEN, "⌫") + "\n")
    out.write("── final text ──\n" + g.text + "\n")
    n_b = sum(e.length for e in g.backtracks)
    out.write(f"── {len(g.raw_ids)} tokens, {len(g.backtracks)} rewinds ({n_b} ⟨b⟩, {g.surplus_backtracks} surplus), "
              f"stop: {g.stop_reason}{', ⟨b⟩ cap hit' if g.backtrack_cap_hit else ''}\n")
    return 0
