"""The stages of ``rewind demo`` (see ``experiments.studies.demo``). Each returns a small dict of facts
that is stored in the stage's marker."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import search
from experiments.studies.demo_plots import plot_methods
from experiments.studies.diagnose import DiagnoseConfig, run_diagnose
from experiments.studies.evaluate import evaluate, read_results
from experiments.studies.threshold_sweep import SweepConfig, run_sweep
from experiments.wiring import load_run
from policy.atomic import atomic_write_text
from policy.data import generate_problems
from policy.sft import last_complete_checkpoint, native_bf16, train_sft
from policy.train_config import TrainConfig
from verifier.config import VerifierTrainConfig
from verifier.step_train import step_summary
from verifier.train import train_verifier as fit

if TYPE_CHECKING:  # demo.py imports this module to run the stages; the config is only an annotation here
    from experiments.studies.demo import DemoConfig

__all__ = ["diagnose", "report", "solve", "sweep", "train_policy", "train_verifier", "wilson"]

METHODS = ("decode", "greedy", "best_of_n", "beam", "mcts")
LABELS = {"decode": "greedy decoding (rewind)", "greedy": "greedy + verifier", "best_of_n": "best-of-N (weighted)",
          "beam": "step beam + verifier", "mcts": "MCTS + verifier"}


def _knobs(cfg: DemoConfig, method: str) -> dict:
    knobs = {
        "best_of_n": {"n": cfg.best_of_n},
        "beam": {"width": cfg.beam_width, "samples": cfg.beam_samples},
        "mcts": {"simulations": cfg.mcts_simulations, "children": cfg.mcts_children},
    }.get(method, {})
    if cfg.quick and method != "decode":  # a barely trained policy rambles: keep the smoke run short
        knobs = {**knobs, "max_depth": 4, "max_step_tokens": 40}
    return knobs


def training_precision(cfg: DemoConfig, part: str = "policy") -> str:
    """``cfg.precision`` (``part="policy"``) or ``cfg.verifier_precision`` (``"verifier"``) with
    ``auto`` resolved on this machine (``policy.sft.native_bf16``)."""
    asked = cfg.precision if part == "policy" else cfg.verifier_precision
    if asked != "auto":
        return asked
    return "bf16" if native_bf16() else "fp32"


def train_policy(cfg: DemoConfig, run: Path) -> dict:
    out = run / "train"
    resume = last_complete_checkpoint(out / "checkpoints") is not None
    precision = training_precision(cfg)
    tc = TrainConfig(out=str(out), mode="hard", model="tiny", task="builtin", num_problems=cfg.train_problems,
                     num_epochs=cfg.train_epochs, max_steps=cfg.max_train_steps, seed=cfg.seed, resume=resume,
                     num_eval=32 if cfg.quick else 128, precision=precision)
    train_sft(tc)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, "precision": precision}


def train_verifier(cfg: DemoConfig, run: Path) -> dict:
    vc = VerifierTrainConfig(out=str(run / "verifier_train"), policy=str(run / "train"), kind="step",
                             num_problems=cfg.verifier_problems, seed=cfg.seed, beam_width=cfg.beam_width,
                             beam_samples=4 if not cfg.quick else 2, epochs=cfg.verifier_epochs,
                             max_depth=4 if cfg.quick else 12, max_step_tokens=40 if cfg.quick else 96,
                             reference_problems=cfg.reference_problems, heads=cfg.verifier_heads,
                             token_head_problems=cfg.token_head_problems, token_head_steps=cfg.token_head_steps,
                             precision=training_precision(cfg, "verifier"),
                             **({"reference_slips": 1} if cfg.quick else {}))
    fit(vc, progress=True)
    m = json.loads((run / "verifier_train" / "metrics.json").read_text())
    return {"test": m.get("test", {})}


def _policy_and_verifier(run: Path):
    return load_run(run)


def solve_threshold(cfg: DemoConfig, verifier) -> float:
    """The solve stage's threshold: ``--threshold``, else the verifier's calibrated one, else 0.5."""
    if cfg.threshold is not None:
        return cfg.threshold
    t = getattr(verifier, "default_threshold", None)
    return 0.5 if t is None else float(t)


def solve(cfg: DemoConfig, run: Path) -> dict:
    pol, ver = _policy_and_verifier(run)
    threshold = solve_threshold(cfg, ver)
    problems = generate_problems(cfg.eval_problems, seed=cfg.seed, split="test")
    acc = {}
    for method in METHODS:
        # a pruned beam keeps its best child when a round prunes all (measured in `rewind diagnose`: at the
        # calibrated τ the plain pruned beam ended some searches with no answer at all)
        keep = {"keep_last": True} if method == "beam" else {}
        rows = evaluate(problems, policy=pol, verifier=ver, method=method, out=run / "results.jsonl", tag=method,
                        threshold=threshold, seed=cfg.seed, trees_dir=run / "trees", trees_limit=cfg.example_trees,
                        max_new_tokens=96 if cfg.quick else 320, **_knobs(cfg, method), **keep)
        acc[method] = sum(r["correct"] for r in rows) / len(rows)
    return {"accuracy": acc, "threshold": threshold}


def sweep(cfg: DemoConfig, run: Path) -> dict:
    """``rewind sweep`` on this run: live beam searches at every threshold, plus the offline
    replay of the search recorded at threshold 1 (``run/sweep/``)."""
    grid = sorted(set(cfg.thresholds) | {1.0})
    sc = SweepConfig(out=str(run / "sweep"), run=str(run), strategy="beam", n=cfg.sweep_problems, seed=cfg.seed + 1,
                     thresholds=",".join(f"{t:g}" for t in grid),
                     knobs=",".join(f"{k}={v}" for k, v in _knobs(cfg, "beam").items()))
    rows = run_sweep(sc, progress=True) or []
    live = [r for r in rows if r.get("source") == "live"]
    acc = {f"{t:g}": sum(r["correct"] for r in live if r["threshold"] == t) / max(1, cfg.sweep_problems) for t in grid}
    return {"accuracy": acc}


def diagnose(cfg: DemoConfig, run: Path) -> dict:
    """``rewind diagnose`` on this run (``run/diagnose/``): what limits search here. Its thresholds
    below 1 also serve as the ``accept`` of lazy-sibling beams."""
    dc = DiagnoseConfig(run=str(run), out=str(run / "diagnose"), n=cfg.diagnose_problems, seed=cfg.seed + 2,
                        samples=4 if cfg.quick else 16, temperatures="0.7" if cfg.quick else "0.4,0.7",
                        width=cfg.beam_width, beam_samples=cfg.beam_samples,
                        thresholds=",".join(f"{t:g}" for t in sorted(set(cfg.diagnose_thresholds) | {1.0})),
                        accepts=",".join(f"{t:g}" for t in sorted(set(cfg.diagnose_thresholds)) if 0 < t < 1),
                        max_new_tokens=96 if cfg.quick else 320, max_depth=4 if cfg.quick else 24,
                        max_step_tokens=40 if cfg.quick else 96)
    r = run_diagnose(dc, log=lambda *_: None)
    return {"limits": r["limits"], "accuracy": {k: v["accuracy"] for k, v in r["methods"].items()}}


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
                    "nodes_pruned": _mean(rs, "nodes_pruned"), "wall_s": _mean(rs, "wall_s_per_problem")})
    return out


def _table(summary: list[dict]) -> str:
    head = ("| method | accuracy | 95% CI | tokens generated / problem | tokens run / problem | "
            "nodes pruned / problem | wall s / problem (batched) |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for s in summary:
        f = lambda x, d=1: "–" if x != x else f"{x:.{d}f}"  # noqa: E731 (NaN-safe format)
        lines.append(f"| {LABELS.get(s['method'], s['method'])} | {s['correct']}/{s['n']} = {100 * s['accuracy']:.1f}% | "
                     f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f}% | {f(s['tokens_generated'])} | "
                     f"{f(s['tokens_run'])} | {f(s['nodes_pruned'])} | {f(s['wall_s'], 2)} |")
    return head + "\n".join(lines) + "\n"


def _used_threshold(rows: list[dict]) -> str:
    used = sorted({r["threshold"] for r in rows if r.get("threshold") is not None})
    return ", ".join(f"{t:g}" for t in used) or "–"


def report(cfg: DemoConfig, run: Path, log=print) -> dict:
    rows = read_results(run / "results.jsonl")
    summary = summary_rows(rows, METHODS)
    plot_methods(summary, run / "plots" / "accuracy_by_method.png", LABELS)
    sweep_md = run / "sweep" / "summary.md"
    trees = _export_trees(run)
    vm = json.loads((run / "verifier_train" / "metrics.json").read_text()).get("test", {})
    tm = json.loads((run / "train" / "metrics.json").read_text())
    text = [f"# Rewind demo — {run}\n", f"Config fingerprint `{cfg.fingerprint()}`; "
            f"{'quick' if cfg.quick else 'full'} run; threshold {_used_threshold(rows)}.\n",
            f"\n## Held-out built-in problems ({cfg.eval_problems})\n\n", _table(summary),
            "\n## Threshold sweep (step beam + verifier; live runs and the replay of the search recorded at τ=1)\n\n",
            _demote(sweep_md.read_text()) if sweep_md.exists() else "(no sweep)\n",
            "\n## Verifier (held-out problems)\n\n", _verifier_lines(vm),
            "\n", (run / "diagnose" / "diagnose.md").read_text()
            if (run / "diagnose" / "diagnose.md").exists() else "", "\n![diagnose](diagnose/diagnose.png)\n",
            "\n## Policy training\n\n", "".join(f"- {k}: {v}\n" for k, v in tm.items() if isinstance(v, (int, float, str))),
            "\n## Files\n\n- `results.jsonl`: one line per problem and method; `sweep/`: the threshold sweep\n"
            "- `plots/accuracy_by_method.png`, `sweep/accuracy_vs_threshold.png`, `sweep/accuracy_vs_tokens.png`\n",
            *[f"- `{t.relative_to(run)}`\n" for t in trees]]
    md = "".join(text)
    atomic_write_text(run / "summary.md", md)
    log("\n" + md)
    return {"summary": summary}


def _demote(md: str) -> str:
    """Embed another summary: its headings one level down, its title dropped."""
    lines = [ln for ln in md.splitlines() if not ln.startswith("# ")]
    return "\n".join("#" + ln if ln.startswith("#") else ln for ln in lines) + "\n"


def _verifier_lines(vm: dict) -> str:
    """AUROC of the head and of the policy's own P(⟨b⟩) per label source and level."""
    if "rankers" in vm:  # a step verifier: sibling and pooled AUROC beside the baselines
        return step_summary(vm) + "\n"
    out = ["| labels | level | positions (errors) | AUROC head | AUROC policy P(⟨b⟩) | ECE head | false prunes @0.5 |\n",
           "|---|---|---|---|---|---|---|\n"]
    f = lambda x: "–" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    for source, levels in vm.items():
        for level, m in (levels.items() if isinstance(levels, dict) else []):
            h, b = m.get("head", {}), m.get("policy_p_backtrack", {})
            fp = (h.get("false_prune") or {}).get("0.5")
            out.append(f"| {source} | {level} | {h.get('n', '–')} ({h.get('n_pos', '–')}) | {f(h.get('auroc'))} | "
                       f"{f(b.get('auroc'))} | {f(h.get('ece'))} | {f(fp)} |\n")
    return "".join(out)


def _export_trees(run: Path) -> list[Path]:
    out = []
    for js in sorted((run / "trees").glob("*.json")):
        html = js.with_suffix(".html")
        if not html.exists():
            search.export_tree(search.load_tree(js), html)
        out.append(html)
    return out
