"""What beam search's exact early stop saves, on a run's held-out test problems.

``python -m experiments.studies.early_stop --run RUN --reference RUN/diagnose200/results.jsonl
[--n 200] [--thresholds 1,0.9,0.85]`` solves the first ``n`` built-in test problems with the
verifier beam exactly as ``rewind diagnose`` does (W=4 M=2, T=0.4, aggregate prod, its depth and
step limits) with ``early_stop=True``, and compares each problem with the reference rows of the
same search without it (diagnose's ``beam verifier`` / ``beam verifier τ=t`` rows, written
before the early stop existed): the answers must be the same, and the table gives the generated
tokens saved. Rows go to ``RUN/early_stop/results.jsonl`` (reused on a rerun).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.evaluate import evaluate, read_results
from experiments.wiring import load
from policy.data import generate_problems
from search.knobs import knob


@dataclass(frozen=True, kw_only=True)
class EarlyStopConfig:
    run: str = knob(None, "a run folder with a policy and a verifier (rewind demo writes one)")
    reference: str = knob(None, "results.jsonl of rewind diagnose on the same run and problems (before early stop)")
    n: int = knob(200, "test problems (the first n of diagnose's; >= 1)")
    thresholds: str = knob("1,0.9,0.85", "pruning thresholds to compare, comma-separated")

    def __post_init__(self) -> None:
        if not self.run or not self.reference:
            raise ValueError("--run and --reference are required")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def _tag(t: float) -> str:
    return "beam verifier" if t >= 1 else f"beam verifier τ={t:g}"


def compare(ours: list[dict], ref: dict[str, dict]) -> dict:
    """Same answers? Tokens with the early stop vs without, over the problems both solved."""
    both = [r for r in ours if r["problem_id"] in ref]
    same = sum(r["answer"] == ref[r["problem_id"]]["answer"] for r in both)
    tok = sum(r["stats"]["tokens_generated"] for r in both)
    tok_ref = sum(ref[r["problem_id"]]["stats"]["tokens_generated"] for r in both)
    return {"n": len(both), "same_answer": same, "correct": sum(r["correct"] for r in both),
            "correct_ref": sum(ref[r["problem_id"]]["correct"] for r in both),
            "tokens": tok / max(1, len(both)), "tokens_ref": tok_ref / max(1, len(both)),
            "saved": 1 - tok / tok_ref if tok_ref else 0.0,
            "fewer_tokens": sum(r["stats"]["tokens_generated"] < ref[r["problem_id"]]["stats"]["tokens_generated"]
                                for r in both)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, EarlyStopConfig)
    cfg = config_from_args(ap.parse_args(argv), EarlyStopConfig)
    policy, verifier = load(cfg.run)
    problems = generate_problems(cfg.n, seed=0, split="test")
    diag = json.loads((Path(cfg.reference).parent / "diagnose.json").read_text())["config"]
    knobs = dict(width=diag["width"], samples=diag["beam_samples"], temperature=diag["search_temperature"],
                 max_depth=diag["max_depth"], max_step_tokens=diag["max_step_tokens"], rank="verifier",
                 aggregate=diag["aggregate"], early_stop=True)
    out = Path(cfg.run) / "early_stop" / "results.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    reference = read_results(Path(cfg.reference))
    table = {}
    print("| τ | same answer | accuracy (early stop / without) | tokens per problem (early stop / without) | saved |")
    print("|---|---|---|---|---|")
    for t in (float(x) for x in cfg.thresholds.split(",")):
        rows = evaluate(problems, policy=policy, verifier=verifier, method="beam", out=out, tag=_tag(t), threshold=t,
                        seed=diag["seed"], max_new_tokens=diag["max_new_tokens"], progress=False, **knobs)
        ref = {r["problem_id"]: r for r in reference if r.get("tag") == _tag(t)}
        c = table[_tag(t)] = compare(rows, ref)
        print(f"| {t:g} | {c['same_answer']}/{c['n']} | {c['correct']}/{c['n']} / {c['correct_ref']}/{c['n']} | "
              f"{c['tokens']:.0f} / {c['tokens_ref']:.0f} | {100 * c['saved']:.1f}% |", flush=True)
    (out.parent / "summary.json").write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
