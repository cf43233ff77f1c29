"""How much training the step verifier needs: its epochs (and reference problems) against what
search gains from it, on validation problems, never on the test problems it is reported on.

``python -m experiments.studies.verifier_budget --run RUN --epochs 4,6,12`` retrains the demo's step
verifier of ``RUN`` (same labelled steps: ``RUN/verifier_train/steps.pt`` and
``reference_steps.pt`` are reused when their keys match) once per setting into
``RUN/verifier_budget/<setting>/``, then solves (with every setting trained by an earlier call too) ``n`` built-in validation problems the verifier
never saw (indices ``skip..skip+n``, as ``choose_search``) with the demo's step beam (W=4 M=2,
T=0.4, prod rule) at τ = 1 and with ``keep_last`` at the verifier's calibrated threshold. It prints
one table (training seconds, held-out sibling AUROC, beam accuracy), the run's own verifier first and writes
``RUN/verifier_budget/results.jsonl`` (rows are reused on a rerun) and ``summary.md``. With
``--split test`` the same verifiers solve the first ``n`` test problems instead (``RUN/verifier_budget/test/``):
not to choose among them, but to show how far apart verifiers of one recipe land where results are reported.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.evaluate import evaluate, method_row, write_summary
from experiments.wiring import load, load_verifier_for
from policy.atomic import atomic_write_json
from policy.data import generate_problems
from search.knobs import knob
from verifier.config import VerifierTrainConfig
from verifier.train import train_verifier


@dataclass(frozen=True, kw_only=True)
class VerifierBudgetConfig:
    run: str = knob(None, "a demo run folder (its verifier_train/ holds the labelled steps to reuse)")
    epochs: str = knob("4,6,12", "comma-separated epoch budgets of the step verifier")
    reference_problems: str = knob("4000", "comma-separated reference-problem counts (0: none)")
    select: str = knob("best", "comma-separated epoch choices: 'best' (best validation sibling AUROC, early "
                       "stopping: the demo's) and/or 'last' (the final, annealed weights); 'last' adds -last to the name")
    dropouts: str = knob("0.1", "comma-separated dropouts inside the step verifier (0.1: the recipe's); the name "
                         "gets -d<x> (a name without it: the 0.1 every run used before 2026-11-30)")
    token_problems: str = knob("0", "comma-separated token-only problem counts (`rewind train-verifier "
                               "--token-problems`; 0: none, the name gets -t<n> otherwise)")
    heads: str = knob("1", "comma-separated ensemble sizes (`rewind train-verifier --heads`; 1: one head, the name "
                      "gets -h<k> otherwise)")
    seeds: str = knob("0", "comma-separated seeds of the labels, split and head (the run's own seed reuses its labels)")
    member_beams: bool = knob(False, "also solve with each ensemble head k >= 1 alone (τ = 1; head 0 is the one-head "
                              "recipe of the same seed): how far single draws of the same labels land apart")
    n: int = knob(200, "validation problems to solve (>= 1)")
    skip: int = knob(400, "validation problems the verifier's own labels came from (the demo's verifier_problems)")
    split: str = knob("validation", "problems to solve: 'validation' (choose a recipe here) or 'test' (the first n "
                      "test problems, those of `rewind diagnose --n n`: report the spread of verifier draws there)")

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("--run is required")
        if self.split not in ("validation", "test"):
            raise ValueError(f"--split must be 'validation' or 'test', got {self.split!r}")
        if not set(self.select.split(",")) <= {"best", "last"}:
            raise ValueError(f"--select takes best and/or last, got {self.select!r}")
        if self.n < 1 or self.skip < 0:
            raise ValueError(f"need n >= 1 and skip >= 0, got n={self.n}, skip={self.skip}")
        for name in ("epochs", "reference_problems", "token_problems", "seeds", "heads"):
            try:
                vals = _ints(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"--{name.replace('_', '-')}: {e}") from None
            low = 1 if name in ("epochs", "heads") else 0
            if not vals or min(vals) < low:
                raise ValueError(f"--{name.replace('_', '-')} needs values >= {low}")
        try:
            drops = _floats(self.dropouts)
        except ValueError as e:
            raise ValueError(f"--dropouts: {e}") from None
        if not drops or not all(0.0 <= d < 1.0 for d in drops):
            raise ValueError(f"--dropouts needs values in [0, 1), got {self.dropouts!r}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


_NAME = re.compile(r"e(\d+)-r(\d+)-s(\d+)(?:-d([\d.]+))?(?:-t(\d+))?(?:-h(\d+))?(-last)?")
LEGACY_DROPOUT = 0.1  # what the step verifier used inside before step_dropout existed


def _name(epochs: int, reference: int, seed: int, select: str, dropout: float, tokens: int = 0, heads: int = 1) -> str:
    return (f"e{epochs}-r{reference}-s{seed}-d{dropout:g}" + (f"-t{tokens}" if tokens else "")
            + (f"-h{heads}" if heads > 1 else "") + ("-last" if select == "last" else ""))


def _train(run: Path, base: dict, out: Path, *, epochs: int, reference: int, seed: int, select: str,
           dropout: float, tokens: int = 0, heads: int = 1) -> dict:
    """Train one verifier into ``out`` (skipped when its metrics exist); returns its metrics plus
    ``train_s`` (wall seconds of this call's training, labels reused). ``base``: the run's verifier config."""
    done = out / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = VerifierTrainConfig(**{**base, "out": str(out), "epochs": epochs, "reference_problems": reference,
                                 "seed": seed, "step_select": select, "step_dropout": dropout, "token_problems": tokens,
                                 "heads": heads})
    out.mkdir(parents=True, exist_ok=True)
    reuse = ["steps.pt"] + (["reference_steps.pt"] if reference == base["reference_problems"] else [])
    for name in reuse:  # the run's labels (a key mismatch would make training collect afresh)
        src = run / "verifier_train" / name
        if src.exists() and not (out / name).exists() and seed == base["seed"]:
            shutil.copy(src, out / name)
    token_head = run / "verifier_train" / "token_head"  # policy-free: reused whenever its key matches
    if token_head.exists() and not (out / "token_head").exists():
        shutil.copytree(token_head, out / "token_head")
    t0 = time.perf_counter()
    train_verifier(cfg, progress=False)
    m = json.loads(done.read_text())
    m["train_s"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(done, m)
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, VerifierBudgetConfig)
    args = config_from_args(ap.parse_args(argv), VerifierBudgetConfig)
    run = Path(args.run)
    if not (run / "verifier_train" / "config.json").exists():
        raise SystemExit(f"{run} has no verifier_train/config.json: run `rewind demo` into it first")
    policy, _ = load(run, signal="policy")
    if args.split == "validation":
        problems = generate_problems(args.skip + args.n, seed=0, split="validation")[args.skip:]
    else:
        problems = generate_problems(args.n, seed=0, split="test")
    root = run / "verifier_budget"
    report = root if args.split == "validation" else root / "test"
    res = report / "results.jsonl"
    beam = dict(width=4, samples=2, temperature=0.4, rank="verifier", aggregate="prod")
    lines = ["| setting | train s (wall; other jobs may have shared the cores) | held-out sibling AUROC | τ* | beam τ=1 | 95% CI | keep-last τ* | tokens τ=1 → τ* |",
             "|---|---|---|---|---|---|---|---|"]
    greedy = evaluate(problems, policy=policy, method="decode", out=res, tag="greedy", threshold=None, progress=False)
    g = method_row(greedy)
    lines.insert(0, f"greedy: {g['correct']}/{g['n']} = {100 * g['accuracy']:.1f}%\n")
    base = json.loads((run / "verifier_train" / "config.json").read_text())
    settings = [("the run's own verifier: e{epochs}-r{reference_problems}-s{seed}".format(**base), run / "verifier_train")]
    asked = {_name(e, r, s, sel, d, t, h) for r in _ints(args.reference_problems) for e in _ints(args.epochs)
             for s in _ints(args.seeds) for sel in args.select.split(",") for d in _floats(args.dropouts)
             for t in _ints(args.token_problems) for h in _ints(args.heads)}
    trained = {d.name for d in root.iterdir() if _NAME.fullmatch(d.name) and (d / "metrics.json").exists()} \
        if root.exists() else set()  # settings of earlier calls are in the table too
    order = lambda x: (*(int(v) for v in _NAME.fullmatch(x).groups()[:3]),  # noqa: E731
                       float(_NAME.fullmatch(x).group(4) or LEGACY_DROPOUT), int(_NAME.fullmatch(x).group(5) or 0),
                       int(_NAME.fullmatch(x).group(6) or 1), x.endswith("-last"))
    settings += [(name, root / name) for name in sorted(asked | trained, key=order)]
    for name, folder in settings:
        if folder.parent == root:
            e, r, s, d, t, h, last = _NAME.fullmatch(name).groups()
            m = _train(run, base, folder, epochs=int(e), reference=int(r), seed=int(s), select="last" if last else "best",
                       dropout=float(d) if d is not None else LEGACY_DROPOUT, tokens=int(t or 0), heads=int(h or 1))
        else:
            m = json.loads((folder / "metrics.json").read_text())
        ver = load_verifier_for(folder / "verifier", policy)
        tau = ver.default_threshold if ver.default_threshold is not None else 0.9
        r1 = evaluate(problems, policy=policy, verifier=ver, method="beam", out=res, tag=f"{name} τ=1",
                      threshold=1.0, progress=False, **beam)
        rk = evaluate(problems, policy=policy, verifier=ver, method="beam", out=res,
                      tag=f"{name} keep-last τ={tau:g}", threshold=tau, keep_last=True, progress=False, **beam)
        a, b = method_row(r1), method_row(rk)
        lo, hi = a["ci95"]
        sib = m["test"]["rankers"]["verifier"]["sibling_auroc"]  # None: no test group holds a right and a wrong step
        fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        tests = _member_tests(m)
        sib_text = fmt(sib) + (" (heads " + " / ".join(fmt(t["sibling_auroc"]) for t in tests) + ")" if tests else "")
        lines.append(f"| {name} | {m.get('train_s', float('nan')):.0f} | {sib_text} | {tau:g} | "
                     f"{100 * a['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | {100 * b['accuracy']:.1f}% | "
                     f"{a['tokens_generated']:.0f} → {b['tokens_generated']:.0f} |")
        print(lines[-1], flush=True)
        for k in range(1, len(getattr(ver, "members", ())) if args.member_beams else 0):
            alone = load_verifier_for(folder / "verifier" / f"member-{k}", policy)
            r = method_row(evaluate(problems, policy=policy, verifier=alone, method="beam", out=res,
                                    tag=f"{name} head {k} τ=1", threshold=1.0, progress=False, **beam))
            lo, hi = r["ci95"]
            head = "the token head" if "token_head" in m and k == len(tests) - 1 else f"head {k}"
            lines.append(f"| {name}, {head} alone | – | {fmt(tests[k]['sibling_auroc'])} | – | "
                         f"{100 * r['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | – | {r['tokens_generated']:.0f} |")
            print(lines[-1], flush=True)
    return write_summary(report, lines)


def _member_tests(m: dict) -> list[dict]:
    """The held-out rankings of a saved verifier's members, in the ensemble's order: the feature
    head(s), then the token head when it has one (``metrics.json`` keeps the heads' mean first)."""
    tests = list(m.get("member_tests") or [])
    if "token_head" in m:
        tests = (tests[1:] if tests else [m["token_head"]["feature_head_test"]]) + [m["token_head"]["token_head_test"]]
    return tests


if __name__ == "__main__":
    raise SystemExit(main())
