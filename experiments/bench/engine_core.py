"""The engine-core benchmark of issue 15, on a real model with a few-shot prompt:

- KV sharing vs ``share_kv=False`` on the same search (8 problems in one ``solve_many``);
- search tokens/s vs ``model.generate`` at the same batch (problems × W × M rows);
- the engine's peak KV (every live slot, copies of the shared prefix included) vs the KV of the
  trees' distinct tokens.

Run: ``python -m experiments.bench.engine_core --model ~/.cache/rewind/smollm2/fp32 --out runs/bench-engine``
(one repetition of each side, measured in one run; writes ``engine.json`` and ``engine.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import search
from experiments.bench.timing import machine
from experiments.flags import add_config_flags, config_from_args
from policy import load_policy
from policy.data import load_gsm8k
from policy.prompts import few_shot
from search.knobs import knob

__all__ = ["EngineBenchConfig", "measure"]


def _search(policy, problems, fmt, *, share_kv: bool, knobs: dict):
    engine = policy.engine(share_kv=share_kv, prompt_format=fmt)
    t0 = time.perf_counter()
    sols = search.solve_many(problems, strategy="beam", policy=engine, verifier=None, **knobs)
    return sols, time.perf_counter() - t0, engine


def _distinct_kv_tokens(sols) -> int:
    """Tokens whose KV a tree needs: its prompt plus every node's alive step tokens."""
    return sum(len(n.ids) for s in sols for n in s.tree.nodes)


def _shared_prompt_tokens(sols) -> int:
    """Length of the prompt prefix all problems share (the few-shot exemplars)."""
    prompts = [s.tree.nodes[0].ids for s in sols]
    n = 0
    while all(len(p) > n for p in prompts) and len({p[n] for p in prompts}) == 1:
        n += 1
    return n


def _peer(policy, problems, fmt, *, rows_per_problem: int, new_tokens: int):
    tok = policy.tokenizer
    prompts = [fmt.encode(p.question, tok) for p in problems]
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, T - len(p):], mask[r, T - len(p):] = torch.tensor(p), 1
    t0 = time.perf_counter()
    with torch.no_grad():
        out = policy.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                                    num_return_sequences=rows_per_problem, pad_token_id=tok.pad_token_id,
                                    suppress_tokens=[policy.backtrack_id])
    wall = time.perf_counter() - t0
    new = out[:, T:].tolist()
    eos = tok.eos_token_id
    n = sum(row.index(eos) + 1 if eos in row else len(row) for row in new)
    return n, wall


def measure(model: str, *, problems: int = 8, shots: int = 4, width: int = 4, samples: int = 4, depth: int = 3,
            step_tokens: int = 16) -> dict:
    policy = load_policy(model)
    policy.model.eval()
    fmt = few_shot(shots, load_gsm8k("train")[:shots])
    probs = load_gsm8k("test")[:problems]
    knobs = dict(width=width, samples=samples, root_samples=width * samples, max_depth=depth,
                 max_step_tokens=step_tokens, threshold=1.0, seed=0)
    _search(policy, probs[:1], fmt, share_kv=True, knobs={**knobs, "max_depth": 1})  # warm-up
    shared, t_shared, engine = _search(policy, probs, fmt, share_kv=True, knobs=knobs)
    _progress(f"search, KV shared: {t_shared:.1f} s")
    recomputed, t_re, _ = _search(policy, probs, fmt, share_kv=False, knobs=knobs)
    _progress(f"search, share_kv=False: {t_re:.1f} s")
    gen_tokens = sum(s.stats["tokens_generated"] for s in shared)
    peer_tokens, t_peer = _peer(policy, probs, fmt, rows_per_problem=width * samples, new_tokens=depth * step_tokens)
    _progress(f"model.generate: {t_peer:.1f} s")
    per_slot = engine.store.pool.bytes_per_slot
    distinct = _distinct_kv_tokens(shared) * per_slot
    # the forest's distinct tokens: the shared few-shot prefix once, not once per problem
    forest = distinct - (len(shared) - 1) * _shared_prompt_tokens(shared) * per_slot
    return {
        "model": model, "problems": problems, "shots": shots, "width": width, "samples": samples, "depth": depth,
        "step_tokens": step_tokens, "prompt_tokens": [len(s.tree.nodes[0].ids) for s in shared],
        "nodes_shared": sum(s.stats["nodes"] for s in shared), "nodes_recomputed": sum(s.stats["nodes"] for s in recomputed),
        "wall_shared_s": t_shared, "wall_recomputed_s": t_re, "sharing_speedup": t_re / t_shared,
        "tokens_run_shared": sum(s.stats["tokens_run"] for s in shared),
        "tokens_run_recomputed": sum(s.stats["tokens_run"] for s in recomputed),
        "search_tokens": gen_tokens, "search_tok_s": gen_tokens / t_shared,
        "peer_rows": problems * width * samples, "peer_tokens": peer_tokens, "peer_wall_s": t_peer,
        "peer_tok_s": peer_tokens / t_peer, "tok_s_ratio": (gen_tokens / t_shared) / (peer_tokens / t_peer),
        "peak_kv_bytes": engine.peak_kv_bytes, "distinct_tree_kv_bytes": distinct,
        "peak_over_distinct": engine.peak_kv_bytes / distinct, "pool_capacity_bytes": engine.store.capacity_bytes,
        "shared_prompt_tokens": _shared_prompt_tokens(shared), "distinct_forest_kv_bytes": forest,
        "peak_over_distinct_forest": engine.peak_kv_bytes / forest,
        "problem_peak_kv_bytes": [s.stats["peak_kv_bytes"] for s in shared],
        "capacity_over_distinct": engine.store.capacity_bytes / distinct, **machine(torch.device("cpu")),
    }


def _progress(msg: str) -> None:
    print(f"[engine_core {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def to_markdown(r: dict) -> str:
    return "\n".join([
        f"{r['model']}, {r['problems']} GSM8K test problems, {r['shots']}-shot prompt "
        f"({min(r['prompt_tokens'])}-{max(r['prompt_tokens'])} tokens), beam W={r['width']} M={r['samples']}, "
        f"depth {r['depth']}, steps ≤ {r['step_tokens']} tokens; {r.get('date')}", "",
        "| measure | ours | peer | ratio |", "| --- | ---: | ---: | ---: |",
        f"| wall, KV shared vs share_kv=False | {r['wall_shared_s']:.1f} s | {r['wall_recomputed_s']:.1f} s | "
        f"{r['sharing_speedup']:.2f}× |",
        f"| tokens run | {r['tokens_run_shared']:,} | {r['tokens_run_recomputed']:,} | "
        f"{r['tokens_run_recomputed'] / r['tokens_run_shared']:.2f}× |",
        f"| tokens/s vs model.generate ({r['peer_rows']} rows) | {r['search_tok_s']:.1f} | {r['peer_tok_s']:.1f} | "
        f"{r['tok_s_ratio']:.2f}× |",
        f"| peak KV (all live slots) vs KV of the trees' distinct tokens | {r['peak_kv_bytes'] / 2**20:.1f} MiB | "
        f"{r['distinct_tree_kv_bytes'] / 2**20:.1f} MiB | {r['peak_over_distinct']:.2f}× |",
        f"| peak KV vs the forest's distinct tokens (the {r['shared_prompt_tokens']}-token shared prefix once) | "
        f"{r['peak_kv_bytes'] / 2**20:.1f} MiB | {r['distinct_forest_kv_bytes'] / 2**20:.1f} MiB | "
        f"{r['peak_over_distinct_forest']:.2f}× |",
        f"| pool allocated vs distinct | {r['pool_capacity_bytes'] / 2**20:.1f} MiB | "
        f"{r['distinct_tree_kv_bytes'] / 2**20:.1f} MiB | {r['capacity_over_distinct']:.2f}× |", ""])


@dataclass(frozen=True, kw_only=True)
class EngineBenchConfig:
    """One engine-core benchmark run (every field a flag)."""

    model: str = knob("~/.cache/rewind/smollm2/fp32", "policy folder or name")
    out: str = knob("runs/bench-engine", "folder for engine.json and engine.md")
    problems: int = knob(8, "GSM8K test problems in one solve_many, >= 1")
    shots: int = knob(4, "few-shot exemplars in the prompt, >= 1")
    width: int = knob(4, "beam width W, >= 1")
    samples: int = knob(4, "children per beam M, >= 1")
    depth: int = knob(3, "max_depth (steps), >= 1")
    step_tokens: int = knob(16, "max_step_tokens, >= 1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, EngineBenchConfig)
    a = config_from_args(ap.parse_args(argv), EngineBenchConfig)
    r = measure(str(Path(a.model).expanduser()), problems=a.problems, shots=a.shots, width=a.width,
                samples=a.samples, depth=a.depth, step_tokens=a.step_tokens)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    r["command"] = "python -m experiments.bench.engine_core " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "engine.json").write_text(json.dumps(r, indent=2))
    (out / "engine.md").write_text(to_markdown(r))
    print(to_markdown(r))


if __name__ == "__main__":
    main()
