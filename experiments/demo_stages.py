"""The stages of ``rewind demo`` (see ``experiments.demo``). Each returns a small dict of facts
that is stored in the stage's marker."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.demo import DemoConfig
from experiments.evaluate import evaluate, read_results
from policy.atomic import atomic_write_text
from policy.data import generate_problems

__all__ = ["report", "solve", "sweep", "train_policy", "train_verifier", "wilson"]

METHODS = ("decode", "greedy", "best_of_n", "beam", "mcts")
LABELS = {"decode": "greedy decoding (rewind)", "greedy": "greedy + verifier", "best_of_n": "best-of-N (weighted)",
          "beam": "step beam + verifier", "mcts": "MCTS + verifier"}


def _knobs(cfg: DemoConfig, method: str) -> dict:
    return {
        "best_of_n": {"n": cfg.best_of_n},
        "beam": {"width": cfg.beam_width, "samples": cfg.beam_samples},
        "mcts": {"simulations": cfg.mcts_simulations, "children": cfg.mcts_children},
    }.get(method, {})


def train_policy(cfg: DemoConfig, run: Path) -> dict:
    from policy.sft import last_complete_checkpoint, train_sft
    from policy.train_config import TrainConfig

    out = run / "train"
    resume = last_complete_checkpoint(out / "checkpoints") is not None
    tc = TrainConfig(out=str(out), mode="hard", model="tiny", task="builtin", num_problems=cfg.train_problems,
                     num_epochs=cfg.train_epochs, max_steps=cfg.max_train_steps, seed=cfg.seed, resume=resume,
                     num_eval=32 if cfg.quick else 128)
    train_sft(tc)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}


def train_verifier(cfg: DemoConfig, run: Path) -> dict:
    from verifier.config import VerifierTrainConfig
    from verifier.train import train_verifier as fit

    vc = VerifierTrainConfig(out=str(run / "verifier_train"), policy=str(run / "train"),
                             labels="injected" if cfg.quick else "mix", num_problems=cfg.verifier_problems,
                             seed=cfg.seed, mc_sequences=8 if cfg.quick else 48)
    fit(vc, progress=True)
    m = json.loads((run / "verifier_train" / "metrics.json").read_text())
    return {"test": m.get("test", {})}


def _policy_and_verifier(run: Path):
    from experiments.wiring import load_run

    return load_run(run)


def solve(cfg: DemoConfig, run: Path) -> dict:
    pol, ver = _policy_and_verifier(run)
    problems = generate_problems(cfg.eval_problems, seed=cfg.seed, split="test")
    acc = {}
    for method in METHODS:
        rows = evaluate(problems, policy=pol, verifier=ver, method=method, out=run / "results.jsonl", tag=method,
                        threshold=cfg.threshold, seed=cfg.seed, trees_dir=run / "trees", trees_limit=cfg.example_trees,
                        **_knobs(cfg, method))
        acc[method] = sum(r["correct"] for r in rows) / len(rows)
    return {"accuracy": acc}


def sweep(cfg: DemoConfig, run: Path) -> dict:
    pol, ver = _policy_and_verifier(run)
    problems = generate_problems(cfg.sweep_problems, seed=cfg.seed + 1, split="test")
    acc = {}
    for t in cfg.thresholds:
        rows = evaluate(problems, policy=pol, verifier=ver, method="beam", out=run / "sweep.jsonl",
                        tag=f"beam@{t:g}", threshold=t, seed=cfg.seed, **_knobs(cfg, "beam"))
        acc[f"{t:g}"] = sum(r["correct"] for r in rows) / len(rows)
    return {"accuracy": acc}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _mean(rows, key):
    vals = [r["stats"].get(key) for r in rows if isinstance(r["stats"].get(key), (int, float))]
    return sum(vals) / len(vals) if vals else float("nan")


def summary_rows(rows: list[dict], methods) -> list[dict]:
    out = []
    for m in methods:
        rs = [r for r in rows if r["tag"] == m]
        if not rs:
            continue
        k = sum(r["correct"] for r in rs)
        lo, hi = wilson(k, len(rs))
        out.append({"method": m, "n": len(rs), "correct": k, "accuracy": k / len(rs), "ci95": [lo, hi],
                    "tokens_generated": _mean(rs, "tokens_generated"), "tokens_run": _mean(rs, "tokens_run"),
                    "nodes_pruned": _mean(rs, "nodes_pruned"), "wall_s": _mean(rs, "wall_s")})
    return out


def _table(summary: list[dict]) -> str:
    head = ("| method | accuracy | 95% CI | tokens generated / problem | tokens run / problem | "
            "nodes pruned / problem | wall s / problem |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for s in summary:
        f = lambda x, d=1: "–" if x != x else f"{x:.{d}f}"  # noqa: E731 (NaN-safe format)
        lines.append(f"| {LABELS.get(s['method'], s['method'])} | {s['correct']}/{s['n']} = {100 * s['accuracy']:.1f}% | "
                     f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f}% | {f(s['tokens_generated'])} | "
                     f"{f(s['tokens_run'])} | {f(s['nodes_pruned'])} | {f(s['wall_s'], 2)} |")
    return head + "\n".join(lines) + "\n"


def report(cfg: DemoConfig, run: Path, log=print) -> dict:
    from experiments.demo_plots import plot_methods, plot_sweep

    rows = read_results(run / "results.jsonl")
    summary = summary_rows(rows, METHODS)
    sweep_rows = read_results(run / "sweep.jsonl")
    sweep = [{"threshold": float(t.split("@")[1]), **s}
             for t in sorted({r["tag"] for r in sweep_rows}, key=lambda t: float(t.split("@")[1]))
             for s in summary_rows(sweep_rows, [t])]
    plots = run / "plots"
    plot_methods(summary, plots / "accuracy_by_method.png", LABELS)
    plot_sweep(sweep, plots / "sweep.png")
    trees = _export_trees(run)
    vm = json.loads((run / "verifier_train" / "metrics.json").read_text()).get("test", {})
    tm = json.loads((run / "train" / "metrics.json").read_text())
    text = [f"# Rewind demo — {run}\n", f"Config fingerprint `{cfg.fingerprint()}`; "
            f"{'quick' if cfg.quick else 'full'} run; threshold {cfg.threshold}.\n",
            f"\n## Held-out built-in problems ({cfg.eval_problems})\n\n", _table(summary),
            "\n## Threshold sweep (step beam + verifier)\n\n",
            "| threshold | accuracy | tokens generated / problem | nodes pruned / problem |\n|---|---|---|---|\n",
            *[f"| {s['threshold']:g} | {s['correct']}/{s['n']} = {100 * s['accuracy']:.1f}% | "
              f"{s['tokens_generated']:.1f} | {s['nodes_pruned']:.1f} |\n" for s in sweep],
            "\n## Verifier (held-out)\n\n", _verifier_lines(vm),
            "\n## Policy training\n\n", "".join(f"- {k}: {v}\n" for k, v in tm.items() if isinstance(v, (int, float, str))),
            "\n## Files\n\n- `results.jsonl`, `sweep.jsonl`: one line per problem and method\n"
            "- `plots/accuracy_by_method.png`, `plots/sweep.png`\n",
            *[f"- `{t.relative_to(run)}`\n" for t in trees]]
    md = "".join(text)
    atomic_write_text(run / "summary.md", md)
    log("\n" + md)
    return {"summary": summary, "sweep": sweep}


def _verifier_lines(vm: dict) -> str:
    out = []
    for source, m in vm.items():
        if isinstance(m, dict) and "head" in m:
            h, b = m["head"], m.get("policy_p_backtrack", {})
            out.append(f"- {source}: AUROC head {h.get('auroc', float('nan')):.3f} vs policy P(⟨b⟩) "
                       f"{b.get('auroc', float('nan')):.3f}\n")
    return "".join(out) or f"- {json.dumps(vm)[:400]}\n"


def _export_trees(run: Path) -> list[Path]:
    import search

    out = []
    for js in sorted((run / "trees").glob("*.json")):
        html = js.with_suffix(".html")
        if not html.exists():
            search.export_tree(search.load_tree(js), html)
        out.append(html)
    return out
