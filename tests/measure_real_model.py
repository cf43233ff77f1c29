"""Measurements on a real model for the README (not a test): greedy accuracy, decode speed, peak memory.

    python tests/measure_real_model.py accuracy POLICY --set builtin|gsm8k|reworded [-n 30] [--prompt-format F]
    python tests/measure_real_model.py speed POLICY
    python tests/measure_real_model.py memory POLICY --what sft|dpo|dpo-full-logits|features

POLICY is anything ``load_policy`` takes (a .gguf file, a run folder, an adapter). Each command
prints one JSON line and appends it to ``runs/smollm2/measure.jsonl``. The reworded problems
(``tests/fixtures/reworded_problems.jsonl``) are written by hand in wordings the built-in
generator never uses, and are never trained on.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
REWORDED = ROOT / "fixtures" / "reworded_problems.jsonl"
LOG = ROOT.parent / "runs" / "smollm2" / "measure.jsonl"


def _problems(name: str, n: int) -> list:
    from policy import data

    if name == "builtin":
        return list(data.generate_problems(n, seed=12345, split="test"))
    if name == "gsm8k":
        return list(data.load_gsm8k("test"))[:n]
    return list(data.load_gsm8k(str(REWORDED)))[:n]


def _load(args):
    from policy import load_policy
    from policy.prompt_spec import prompt_format_from_spec

    fmt = prompt_format_from_spec(args.prompt_format, task="gsm8k") if args.prompt_format else None
    return load_policy(args.policy, dtype="float32", prompt_format=fmt)


def accuracy(args) -> dict:
    from policy.data import answers_match, extract_answer
    from policy.generate import generate

    policy = _load(args)
    problems = _problems(args.set, args.n)
    t0 = time.perf_counter()
    gens = generate(policy, [policy.prompt_ids(p.question) for p in problems], max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size)
    correct = [answers_match(extract_answer(g.text), p.answer) for g, p in zip(gens, problems)]
    return {"set": args.set, "n": len(problems), "accuracy": sum(correct) / len(problems),
            "backtracks": sum(len(g.backtracks) for g in gens), "wall_s": round(time.perf_counter() - t0, 1),
            "prompt_format": policy.prompt_format.kind, "example": gens[0].raw_text[:300]}


def speed(args) -> dict:
    from policy.generate import generate

    policy = _load(args)
    out = {}
    for batch in (1, 8):
        prompts = [policy.prompt_ids(p.question) for p in _problems("gsm8k", batch)]
        t0 = time.perf_counter()
        gens = generate(policy, prompts, max_new_tokens=args.max_new_tokens, stop_at_answer=False,
                        max_backtracks=0, batch_size=batch)
        ours = sum(len(g.raw_ids) for g in gens) / (time.perf_counter() - t0)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[policy.tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = policy.model.generate(ids, attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False,
                                        min_new_tokens=args.max_new_tokens, pad_token_id=policy.tokenizer.pad_token_id)
        theirs = (ref.shape[1] - width) * batch / (time.perf_counter() - t0)
        out[f"batch{batch}"] = {"rewind_tok_s": round(ours, 1), "hf_generate_tok_s": round(theirs, 1)}
    return out


def _batch(policy, kind: str, n: int):
    from policy import data
    from policy.collator import Collator
    from policy.dpo import DPOCollator

    problems = _problems("builtin", n)
    if kind == "sft":
        rows = data.build_dataset("sft", problems, policy.tokenizer, progress=False)
        return Collator(mode="hard", pad_token_id=policy.tokenizer.pad_token_id,
                        backtrack_id=policy.backtrack_id, attn_form="bool")([rows[i] for i in range(n)])
    rows = data.build_dataset("dpo", problems, policy.tokenizer, progress=False)
    return DPOCollator(pad_token_id=policy.tokenizer.pad_token_id, backtrack_id=policy.backtrack_id,
                       attn_form="bool")([rows[i] for i in range(n)])


def memory(args) -> dict:
    """Peak RSS of one training step / feature pass at batch ``n`` (this process, fresh)."""
    from policy.dpo import model_sequence_logps, sequence_logps

    policy = _load(args)
    policy.model.train()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    n = args.n
    if args.what == "features":
        from verifier.features import sequence_hidden

        policy.model.eval()
        b = _batch(policy, "sft", n)
        seqs = [(row[row != -1].tolist(), 1) for row in b["input_ids"]]
        sequence_hidden(policy, seqs)
        tokens = int(b["input_ids"].numel())
    else:
        b = _batch(policy, "sft" if args.what == "sft" else "dpo", n)
        feed = {k: b[k] for k in ("input_ids", "attention_mask", "position_ids")}
        if args.what == "sft":
            loss = policy.model(**feed, labels=b["labels"]).loss
        else:
            ref = sequence_logps if args.what == "dpo-full-logits" else None
            if ref is not None:
                logp, _ = sequence_logps(policy.model(**feed).logits, b["labels"])
                with torch.no_grad():
                    rlogp, _ = sequence_logps(policy.model(**feed).logits, b["labels"])
            else:
                logp, _ = model_sequence_logps(policy.model, feed, b["labels"])
                with torch.no_grad():
                    rlogp, _ = model_sequence_logps(policy.model, feed, b["labels"])
            loss = -(logp - rlogp).sum()
        loss.backward()
        tokens = int(b["input_ids"].numel())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"what": args.what, "rows": int(b["input_ids"].shape[0]), "tokens": tokens,
            "rss_after_load_gb": round(loaded, 2), "peak_rss_gb": round(peak, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=("accuracy", "speed", "memory"))
    ap.add_argument("policy")
    ap.add_argument("--set", default="builtin", choices=("builtin", "gsm8k", "reworded"))
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--prompt-format", default=None)
    ap.add_argument("--what", default="sft", choices=("sft", "dpo", "dpo-full-logits", "features"))
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    result = {"command": args.command, "policy": args.policy, "tag": args.tag,
              "date": time.strftime("%Y-%m-%d %H:%M"), **globals()[args.command](args)}
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
