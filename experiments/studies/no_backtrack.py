"""Does a policy's own ⟨b⟩ help it? The same policy decoded greedily with ⟨b⟩ allowed and forbidden.

``python -m experiments.studies.no_backtrack --ablation runs/ablation17 --out DIR`` takes every
trained policy of an ablation folder (``runs/<mode>-s<seed>``) whose mode backtracks, decodes the
ablation's held-out problems greedily with hard rewind and ⟨b⟩ forbidden (its logit at -inf), and
compares each problem with that policy's ``greedy-rewind`` row of the ablation (⟨b⟩ allowed): paired
Δ and McNemar p per mode, seeds pooled and per seed. Between two policies of different training
modes, a difference in accuracy can come from anything training changed; between the same policy
with and without its ⟨b⟩ it can only come from the ⟨b⟩.

As a check that the comparison is fair, the first ``--check`` problems of every policy are also
decoded with ⟨b⟩ allowed: they must give the ablation's answers (greedy decoding is deterministic).
Rows go to ``DIR/results.jsonl`` (reused on a rerun), the table to ``DIR/summary.md``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from experiments.flags import add_config_flags, config_from_args
from experiments.inputs import load_problems
from experiments.studies.ablation import load_stage
from experiments.studies.evaluate import write_summary
from experiments.studies.stats import format_p, mcnemar
from policy.atomic import append_jsonl
from policy.data import answers_match, extract_answer, format_prompt
from policy.generate import generate
from search.knobs import knob

BACKTRACKING_MODES = ("naive", "masked", "hard", "hard+dpo", "hard+onpolicy", "hard+cont")


@dataclass(frozen=True, kw_only=True)
class NoBacktrackConfig:
    ablation: str = knob(None, "an ablation folder (rewind ablation --out) with trained policies and results")
    out: str = knob(None, "where to write results.jsonl and summary.md")
    modes: str = knob(",".join(BACKTRACKING_MODES), "modes to decode, comma-separated")
    check: int = knob(50, "problems per policy also decoded with ⟨b⟩ allowed, to match the ablation's rows (>= 0)")
    batch_size: int = knob(32, "prompts per decoding batch (>= 1)")

    def __post_init__(self) -> None:
        if not self.ablation or not self.out:
            raise ValueError("--ablation and --out are required")
        if self.check < 0 or self.batch_size < 1:
            raise ValueError(f"need check >= 0 and batch_size >= 1, got {self.check}, {self.batch_size}")


def _decode(policy, problems, *, bias: float, batch_size: int) -> list[dict]:
    out = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        gens = generate(policy, [format_prompt(p.question) for p in chunk], rewind=True, max_new_tokens=320,
                        seed=0, backtrack_bias=bias)
        for p, g in zip(chunk, gens):
            answer = extract_answer(g.text)
            out.append({"problem_id": p.id, "answer": answer, "correct": bool(answers_match(answer, p.answer)),
                        "runs": len(g.backtracks), "tokens_generated": len(g.raw_ids)})
    return out



def compare(allowed: dict, forbidden: dict) -> str:
    """'Δ (forbidden − allowed), McNemar p (only forbidden right : only allowed right), n' on the shared keys."""
    keys = sorted(allowed.keys() & forbidden.keys())
    if not keys:
        return "–"
    a = {k: allowed[k] for k in keys}
    f = {k: forbidden[k] for k in keys}
    t = mcnemar(f, a)
    delta = sum(f[k] - a[k] for k in keys) / len(keys)
    return f"{100 * sum(a.values()) / len(keys):.1f}% → {100 * sum(f.values()) / len(keys):.1f}%, " \
           f"Δ {100 * delta:+.1f}, {format_p(t.p_value)} ({t.only_a}:{t.only_b}, n={len(keys)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, NoBacktrackConfig)
    cfg = config_from_args(ap.parse_args(argv), NoBacktrackConfig)
    abl = Path(cfg.ablation)
    if not (abl / "config.json").exists():
        raise ValueError(f"{abl} is not an ablation folder (no config.json)")
    conf = json.loads((abl / "config.json").read_text())
    n = int(conf.get("config", conf).get("n", 500))
    problems = load_problems("builtin", n, seed=0, split="test")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "results.jsonl"
    done = {(r["mode"], r["seed"], r["allowed"], r["problem_id"]): r
            for r in map(json.loads, rows_path.read_text().splitlines())} if rows_path.exists() else {}
    modes = [m for m in cfg.modes.split(",") if m]
    cells = []
    for mode in modes:
        for run in sorted(abl.glob(f"runs/{mode.replace('+', '_')}-s*")):
            seed = int(run.name.rsplit("-s", 1)[1])
            res = abl / f"results-{mode.replace('+', '_')}-s{seed}.jsonl"
            ablation_rows = [json.loads(x) for x in res.read_text().splitlines()] if res.exists() else []
            ref = {r["problem_id"]: r for r in ablation_rows if r.get("inference") == "greedy-rewind"}
            if len(ref) < n or not (run / "verifier_run" / "metrics.json").exists():
                continue  # not evaluated by the ablation yet
            cells.append((mode, seed, run, ref))
    for mode, seed, run, _ in tqdm(cells, desc="policies", unit="policy"):
        todo = {True: problems[:cfg.check], False: problems}
        if all((mode, seed, allowed, p.id) in done for allowed, ps in todo.items() for p in ps):
            continue
        policy, _ = load_stage(run)
        for allowed, ps in todo.items():
            ps = [p for p in ps if (mode, seed, allowed, p.id) not in done]
            if not ps:
                continue
            for row in _decode(policy, ps, bias=0.0 if allowed else float("-inf"), batch_size=cfg.batch_size):
                row.update(mode=mode, seed=seed, allowed=allowed)
                append_jsonl(rows_path, row)
                done[mode, seed, allowed, row["problem_id"]] = row
    lines = ["| mode | seed | greedy rewind, ⟨b⟩ allowed → forbidden | forbidden rows with a ⟨b⟩-run | "
             "check: allowed answers = ablation's |", "|---|---|---|---|---|"]
    for mode in modes:
        mine = [c for c in cells if c[0] == mode]
        pooled_a, pooled_f = {}, {}
        for _, seed, _, ref in mine:
            a = {(seed, k): bool(r["correct"]) for k, r in ref.items()}
            f = {(seed, r["problem_id"]): r["correct"] for (m, s, al, _), r in done.items()
                 if m == mode and s == seed and not al}
            chk = [(r["answer"] == ref[r["problem_id"]]["answer"]) for (m, s, al, _), r in done.items()
                   if m == mode and s == seed and al]
            runs = sum(r["runs"] > 0 for (m, s, al, _), r in done.items() if m == mode and s == seed and not al)
            pooled_a.update(a)
            pooled_f.update(f)
            lines.append(f"| {mode} | {seed} | {compare(a, f)} | {runs} | {sum(chk)}/{len(chk)} |")
        if len(mine) > 1:
            lines.append(f"| {mode} | pooled | {compare(pooled_a, pooled_f)} | | |")
    return write_summary(out, lines)


if __name__ == "__main__":
    raise SystemExit(main())
