"""Choose the search rule on validation problems, never on the test problems it is reported on.

``python -m experiments.studies.choose_search --run RUN [--n 200]`` solves ``n`` built-in validation
problems that the run's verifier did not learn from (indices ``skip..skip+n`` of the validation
split; the verifier's own steps come from the first ``verifier_problems``) with step beam search
at W=4 M=2 and T=0.4 under each path aggregate (last / max / prod), with MCTS at a matched budget,
and with greedy decoding; then, with the prod rule, the other shapes of the same 8 children per
round (W×M = 1×8, 2×4, 8×1), the step temperature (0.4-0.8), ``distinct`` beams, and the pruning
threshold 0.9 (and lower for ``distinct``) against each τ = 1; then ``keep_last`` pruning at τ =
0.9-0.5 for W×M 4×2 and 8×1, beside the same beams ranked and pruned by the step checker (an
oracle: the most any step pruner can cut); last, twice the budget: W×M 4×4 (verifier and oracle)
beside vote@16 (majority and verifier-weighted), which spends the same tokens; and lazy siblings
(``BeamConfig.accept``: a beam draws its next child only while none of its children scores below
the threshold) for W×M 4×2 and 4×4; and rewrites (``BeamConfig.rewrite``: a beam whose children
all score P(error) >= 0.5 draws children that back up into its best child's step), alone and with
lazy siblings, beside the oracle beam with rewrites. It prints one table and writes
``RUN/choose_search/results.jsonl`` (rows are reused on a rerun). ``--only`` runs the rows whose tag
is one of its comma-separated parts, or starts with a part that ends in ``*`` (e.g.
``--only "greedy,beam prod,beam prod W4 M2 lazy*"``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from experiments.flags import add_config_flags, config_from_args
from experiments.studies.evaluate import evaluate
from experiments.studies.stats import wilson
from experiments.wiring import load
from policy.data import generate_problems
from search.knobs import knob
from verifier.baselines import CheckerOracle


@dataclass(frozen=True, kw_only=True)
class ChooseSearchConfig:
    run: str = knob(None, "a run folder with a policy and a verifier (rewind demo writes one)")
    n: int = knob(200, "validation problems to solve (>= 1)")
    skip: int = knob(400, "validation problems the verifier's own labels came from (the demo's verifier_problems)")
    only: str = knob("", "comma-separated tags to run ('prefix*' for every tag that starts with prefix); '' runs all")

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("--run is required")
        if self.n < 1 or self.skip < 0:
            raise ValueError(f"need n >= 1 and skip >= 0, got n={self.n}, skip={self.skip}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, ChooseSearchConfig)
    args = config_from_args(ap.parse_args(argv), ChooseSearchConfig)
    policy, verifier = load(args.run)
    problems = generate_problems(args.skip + args.n, seed=0, split="validation")[args.skip:]
    out = Path(args.run) / "choose_search" / "results.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    beam = dict(width=4, samples=2, temperature=0.4, rank="verifier")
    plan = {"greedy": ("decode", None, {}),
            **{f"beam {a}": ("beam", verifier, {**beam, "aggregate": a}) for a in ("last", "max", "prod")},
            "mcts 16x2": ("mcts", verifier, {"simulations": 16, "children": 2, "temperature": 0.4}),
            **_variants(beam, verifier)}
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    plan = {tag: v for tag, v in plan.items()
            if not parts or any(tag == p or (p.endswith("*") and tag.startswith(p[:-1])) for p in parts)}
    if not plan:
        raise SystemExit(f"--only {args.only!r} matches no row")
    print("| method | accuracy | 95% CI | tokens generated / problem |\n|---|---|---|---|")
    for tag, (method, ver, knobs) in plan.items():
        knobs = dict(knobs)
        threshold = knobs.pop("threshold", 1.0)
        rows = evaluate(problems, policy=policy, verifier=ver, method=method, out=out, tag=tag, threshold=threshold,
                        progress=False, **knobs)
        k, n = sum(r["correct"] for r in rows), len(rows)
        lo, hi = wilson(k, n)
        toks = sum(r["stats"].get("tokens_generated", 0) for r in rows) / n
        print(f"| {tag} | {k}/{n} = {100 * k / n:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | {toks:.0f} |", flush=True)
    return 0


def _variants(beam: dict, verifier) -> dict[str, tuple[str, object, dict]]:
    """The prod-rule beam's other shapes, temperatures, distinct beams and thresholds (tags name
    what differs from W=4 M=2, T=0.4, τ=1)."""
    prod = {**beam, "aggregate": "prod"}
    plan = {"beam prod τ=0.9": {**prod, "threshold": 0.9}}
    for w, m in ((1, 8), (2, 4), (8, 1)):
        plan[f"beam prod W{w} M{m}"] = {**prod, "width": w, "samples": m}
        plan[f"beam prod W{w} M{m} τ=0.9"] = {**prod, "width": w, "samples": m, "threshold": 0.9}
    for t in (0.5, 0.6, 0.7, 0.8):
        plan[f"beam prod T={t:g}"] = {**prod, "temperature": t}
    plan["beam prod distinct"] = {**prod, "distinct": True}
    for tau in (0.9, 0.8, 0.5):
        plan[f"beam prod distinct τ={tau:g}"] = {**prod, "distinct": True, "threshold": tau}
    for w, m in ((4, 2), (8, 1)):  # keep_last: an all-pruned round keeps its best child
        shape = "" if (w, m) == (4, 2) else f" W{w} M{m}"
        for tau in (0.9, 0.8, 0.65, 0.5):
            plan[f"beam prod{shape} keep-last τ={tau:g}"] = {**prod, "width": w, "samples": m, "threshold": tau,
                                                           "keep_last": True}
    plan["beam prod W4 M4"] = {**prod, "samples": 4}  # twice the budget: 16 children per round
    for m in (2, 4):  # lazy siblings: a beam stops drawing once a child scores below `accept`
        for a in (0.5, 0.8, 0.9, 0.95):
            plan[f"beam prod W4 M{m} lazy accept={a:g}"] = {**prod, "samples": m, "accept": a}
    for r in (2, 4):  # rewrites: a beam whose children are all rejected backs up into its best child's step
        plan[f"beam prod rewrite={r}"] = {**prod, "rewrite": r}
        for at in (0.3, 0.7):  # the P(error) at which every child counts as rejected (default 0.5)
            plan[f"beam prod rewrite={r} at={at:g}"] = {**prod, "rewrite": r, "rewrite_at": at}
        for a in (0.8,):
            plan[f"beam prod W4 M2 lazy accept={a:g} rewrite={r}"] = {**prod, "accept": a, "rewrite": r}
            plan[f"beam prod W4 M4 lazy accept={a:g} rewrite={r}"] = {**prod, "samples": 4, "accept": a, "rewrite": r}
    out = {tag: ("beam", verifier, knobs) for tag, knobs in plan.items()}
    for vote, ver in (("majority", None), ("weighted", verifier)):  # vote@16: the same tokens as W4 M4
        out[f"vote@16 {'verifier' if ver else 'majority'}"] = ("best_of_n", ver, {"n": 16, "vote": vote,
                                                                                  "temperature": beam["temperature"]})
    # the ceiling of step pruning: the step checker (P in {0, 1}) as ranker and pruner
    oracle = CheckerOracle(getattr(verifier, "hidden_size", None))
    for w, m in ((4, 2), (8, 1)):
        shape = "" if (w, m) == (4, 2) else f" W{w} M{m}"
        out[f"beam oracle{shape}"] = ("beam", oracle, {**prod, "width": w, "samples": m, "aggregate": "max"})
        out[f"beam oracle{shape} keep-last τ=0.5"] = ("beam", oracle, {**prod, "width": w, "samples": m,
                                                                        "aggregate": "max", "threshold": 0.5,
                                                                        "keep_last": True})
    out["beam oracle W4 M4"] = ("beam", oracle, {**prod, "samples": 4, "aggregate": "max"})
    for r in (2, 4):
        out[f"beam oracle rewrite={r}"] = ("beam", oracle, {**prod, "aggregate": "max", "rewrite": r})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
