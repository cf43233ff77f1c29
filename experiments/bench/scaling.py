"""Benchmark groups 5 (training: ``hard`` vs ``clean`` SFT tokens/s) and 6 (scaling: wall time
and tokens against the number of problems batched and against the size of the tree, with
least-squares line fits)."""

from __future__ import annotations

import math
import statistics

import numpy as np

import search
from experiments.bench.setup import Setup
from experiments.bench.timing import Row, check, timed
from experiments.bench.train_throughput import measure
from policy import data

__all__ = ["line_fit", "scaling_rows", "training_rows"]


def training_rows(setup: Setup) -> list[Row]:
    """``experiments.bench.train_throughput.measure`` of ``clean`` and ``hard`` (the modes take turns
    step by step), ``reps`` times; the ratio is the median over repetitions.

    Tokens are the non-pad tokens each mode feeds (``hard`` feeds the longer error + ⟨b⟩ +
    correction sequences), so tokens/s compares the cost per token of the two layouts."""
    s = setup.sizes
    problems = data.generate_problems(max(4 * s.train_batch, 16), seed=setup.cfg.seed, split="train")
    examples = list(data.build_dataset("sft", problems, setup.policy.tokenizer, seed=setup.cfg.seed, progress=False))
    kw = {"batch_size": s.train_batch, "steps": s.train_steps, "warmup": max(1, s.warmup), "device": setup.device,
          "attn": "sdpa", "bf16": False, "seed": setup.cfg.seed}
    runs = []
    for _ in range(s.reps):
        clean, hard = measure(["clean", "hard"], examples, **kw)
        runs.append((clean, hard))
    ratio = statistics.median(h["tokens_per_s"] / c["tokens_per_s"] for c, h in runs)
    clean = statistics.median(c["tokens_per_s"] for c, _ in runs)
    hard = statistics.median(h["tokens_per_s"] for _, h in runs)
    collate = statistics.median(h["collate_seconds"] / h["seconds"] for _, h in runs)
    return [Row(id="5a", name=f"SFT tokens/s, hard layout (batch {s.train_batch}, {s.train_steps} steps)",
                ours=hard, peer=clean, unit="tok/s", peer_name="clean SFT", ratio=ratio,
                ratio_means="hard tokens/s ÷ clean tokens/s", target=">= 0.8", met=check(ratio, ">= 0.8"),
                note=f"built-in tiny policy (always, whatever --model); hard spends {collate:.0%} of its step "
                     "building the cache layout in Python.",
                extra={"runs": [{"clean": c, "hard": h} for c, h in runs]})]


def line_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares line ``y = slope·x + intercept`` and the log-log exponent (y ∝ x^k)."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    k = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if min(x) > 0 and min(y) > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "exponent": k}


def _beam(setup: Setup, problems: int, width: int, samples: int):
    s = setup.sizes
    return lambda: search.solve_many(setup.problems[:problems], strategy="beam", policy=setup.policy, width=width,
                                     samples=samples, threshold=1.0, max_step_tokens=s.step_tokens,
                                     max_depth=max(2, s.depth // 2), seed=setup.cfg.seed)


def _median_run(setup: Setup, fn) -> tuple[float, list]:
    s = setup.sizes
    for _ in range(s.warmup):
        fn()
    runs = [timed(fn, setup.device) for _ in range(s.reps)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def scaling_rows(setup: Setup) -> list[Row]:
    s = setup.sizes
    rows: list[Row] = []
    # (a) problems batched together: every round expands all of them in one batch
    points = []
    for n in s.scale_problems:
        wall, sols = _median_run(setup, _beam(setup, n, 2, 2))
        points.append({"problems": n, "wall_s": wall, "tokens_run": sum(x.stats["tokens_run"] for x in sols)})
    fit = line_fit([p["problems"] for p in points], [p["wall_s"] for p in points])
    lo, hi = points[0], points[-1]
    per = (lo["wall_s"] / lo["problems"]) / (hi["wall_s"] / hi["problems"])
    rows.append(Row(id="6a", name=f"beam W=2 M=2 on {hi['problems']} problems batched: wall per problem",
                    ours=hi["wall_s"] / hi["problems"], peer=lo["wall_s"] / lo["problems"], unit="s",
                    peer_name=f"{lo['problems']} problem alone", ratio=per,
                    ratio_means=f"per-problem wall at {lo['problems']} ÷ at {hi['problems']} (batching gain)",
                    note=f"fit wall = {fit['slope']:.3g}·problems + {fit['intercept']:.3g} s; wall ∝ problems^"
                         f"{fit['exponent']:.2f}. Points: " + ", ".join(
                             f"{p['problems']}→{p['wall_s']:.2f}s/{p['tokens_run']:,}tok" for p in points) + ".",
                    extra={"points": points, "fit": fit}))
    # (b) tree size: one problem, MCTS with more simulations (each adds K=4 children)
    points = []
    for sims in s.scale_simulations:
        wall, sols = _median_run(setup, lambda sims=sims: search.solve_many(
            setup.problems[:1], strategy="mcts", policy=setup.policy, simulations=sims, threshold=1.0,
            max_step_tokens=s.step_tokens, max_depth=s.depth, seed=setup.cfg.seed))
        st = sols[0].stats
        points.append({"simulations": sims, "nodes": st["nodes"], "tokens_in_tree": st["tokens_in_tree"],
                       "tokens_run": st["tokens_run"], "wall_s": wall})
    fit = line_fit([p["tokens_in_tree"] for p in points], [p["wall_s"] for p in points])
    lo, hi = points[0], points[-1]
    per = (lo["wall_s"] / lo["tokens_in_tree"]) / (hi["wall_s"] / hi["tokens_in_tree"])
    rows.append(Row(id="6b", name=f"tree of {hi['nodes']} nodes (MCTS {hi['simulations']} sims): wall per 1k tree tokens",
                    ours=1000 * hi["wall_s"] / hi["tokens_in_tree"], peer=1000 * lo["wall_s"] / lo["tokens_in_tree"],
                    unit="s", peer_name=f"tree of {lo['nodes']} nodes", ratio=per,
                    ratio_means="per-token wall of the smallest tree ÷ of the largest (1 = linear growth)",
                    note=f"fit wall = {fit['slope'] * 1000:.3g} s per 1k tokens + {fit['intercept']:.3g} s; wall ∝ "
                         f"tokens^{fit['exponent']:.2f}. Points: " + ", ".join(
                             f"{p['simulations']} sims: {p['nodes']} nodes/{p['tokens_in_tree']:,}tok→{p['wall_s']:.2f}s"
                             for p in points) + ".",
                    extra={"points": points, "fit": fit}))
    for r in rows:
        if r.ratio is not None and not math.isfinite(r.ratio):
            raise RuntimeError(f"scaling row {r.id} has a non-finite ratio")
    return rows
