"""``rewind diagnose RUN``: what limits search on a run — the headroom report.

On ``n`` held-out problems of the run's task it measures, side by side:

- greedy decoding (with rewind) and a taxonomy of its errors (first wrong step vs the reference);
- pass@k (k = 1, 4, 8, 16) at a few temperatures, from 16 seeded samples per problem, and the
  fix / harm rate of the policy's own ⟨b⟩-runs in those samples;
- majority and verifier-weighted vote over best-of-N chains (N = 8, and N = W×M, the beam's
  token budget);
- step beam search at one budget (W×M) with the children ranked by the verifier, by path
  log-prob, at random, and by the step checker (an oracle);
- the verifier's within-problem **sibling AUROC** beside log-prob, the policy's P(⟨b⟩) and random,
  on freshly drawn sibling steps; its false-prune rate on right steps and its prune rate on wrong
  steps at each threshold; a threshold sweep of the verifier beam (``keep_last``: a round whose
  children are all pruned keeps its best one) and of verifier-weighted vote@8; and the same beam
  pruned by the step checker, the ceiling of what step pruning can cut on the run;

and writes ``diagnose.json``, ``diagnose.md`` and ``diagnose.png`` into ``out`` (default
``RUN/diagnose``), with a paragraph that says in words what limits search there.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from experiments.studies.backtracks import EFFECT_KEYS, backtrack_effects, with_rates
from experiments.studies.beam_losses import classify, losses_markdown, rewrite_events, summarize
from experiments.studies.evaluate import evaluate, method_row
from experiments.studies.stats import mcnemar
from experiments.wiring import load_run
from policy.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from policy.data import generate_problems, load_gsm8k
from policy.data.grading import answers_match, extract_answer, parse_annotations
from policy.data.problems import format_prompt
from policy.generate import generate
from policy.workers import can_run_side_jobs, side_job
from search.export import load_tree
from search.knobs import knob as _f
from verifier.baselines import CheckerOracle, RandomRanker
from verifier.labels import holds_error
from verifier.step_data import collect_steps
from verifier.step_head import StepVerifier
from verifier.step_train import evaluate_steps, score_data

__all__ = ["DiagnoseConfig", "error_taxonomy", "pass_at_k", "run_diagnose"]


@dataclass(frozen=True, kw_only=True)
class DiagnoseConfig:
    """What ``rewind diagnose`` measures."""

    run: str = _f(None, "a run folder with a policy and a verifier (rewind demo / train-verifier)")
    out: str | None = _f(None, "where to write diagnose.json/.md/.png (default: RUN/diagnose)", required=False)
    n: int = _f(100, "held-out problems (>= 1)")
    task: str = _f("builtin", "problems: 'builtin' (held-out test split) or 'gsm8k' (test set)")
    temperatures: str = _f("0.4,0.7", "sampling temperatures of pass@k, comma-separated, each in (0, 2]")
    samples: int = _f(16, "samples per problem and temperature for pass@k (>= 16 gives pass@16)")
    search_temperature: float = _f(0.4, "temperature of best-of-N and beam steps (> 0)")
    width: int = _f(4, "beam width W (>= 1)")
    beam_samples: int = _f(4, "children per beam M (>= 1); the root draws W x M")
    aggregate: str = _f("prod", "path score of the verifier beam: last, max or prod")
    thresholds: str = _f("0.3,0.5,0.7,0.9,1", "thresholds of the prune table and the sweep, comma-separated, in [0, 1]")
    accepts: str = _f("", "lazy-sibling beams beside the full one (BeamConfig.accept: a beam draws its next child "
                      "only while none of its children scores below it), comma-separated, in (0, 1]; '' none")
    accept_samples: int | None = _f(None, "children per beam M of the lazy beams, at most (default: --beam-samples); "
                                    "a larger M spends about the full beam's tokens on more children where the "
                                    "verifier doubts", required=False)
    rewrite: int = _f(0, "rewrites (BeamConfig.rewrite) of two more beams, the verifier's and the oracle's: a beam "
                      "whose children all score P(error) >= 0.5 draws this many children that back up into its best "
                      "child's step at its least likely token (>= 0; 0: no such rows)")
    max_new_tokens: int = _f(320, "longest decoded solution (>= 1)")
    max_depth: int = _f(24, "most steps of a searched solution (>= 1)")
    max_step_tokens: int = _f(96, "step-length cap of search in tokens (>= 1)")
    seed: int = _f(0, "seed for problems and sampling")
    workers: int = _f(2, "processes: 2 draws the pass@k samples in a second process while this one searches, one "
                      "thread each, on a CPU with >= 2 cores (the same measurements up to float rounding, in less "
                      "wall time); 1 does one after the other")

    def __post_init__(self) -> None:
        if not self.run:
            raise ValueError("run is required: a run folder with a policy and a verifier")
        if self.accept_samples is not None and (isinstance(self.accept_samples, bool) or
                                                not isinstance(self.accept_samples, int) or self.accept_samples < 1):
            raise ValueError(f"--accept-samples must be an integer >= 1, got {self.accept_samples!r}")
        if isinstance(self.rewrite, bool) or not isinstance(self.rewrite, int) or self.rewrite < 0:
            raise ValueError(f"--rewrite must be an integer >= 0, got {self.rewrite!r}")
        if self.workers not in (1, 2):
            raise ValueError(f"--workers must be 1 or 2, got {self.workers!r}")
        for name in ("n", "samples", "width", "beam_samples", "max_new_tokens", "max_depth", "max_step_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        temps, ths = _floats("temperatures", self.temperatures), _floats("thresholds", self.thresholds)
        if not temps or any(not 0 < t <= 2 for t in temps):
            raise ValueError(f"temperatures must be numbers in (0, 2], got {self.temperatures!r}")
        if not 0 < self.search_temperature <= 2:
            raise ValueError(f"search_temperature must be in (0, 2], got {self.search_temperature}")
        if not ths or any(not 0 <= t <= 1 for t in ths):
            raise ValueError(f"thresholds must lie in [0, 1], got {self.thresholds!r}")
        if any(not 0 < a <= 1 for a in self.accept_list):
            raise ValueError(f"accepts must lie in (0, 1], got {self.accepts!r}")
        if self.aggregate not in ("last", "max", "prod"):
            raise ValueError(f"aggregate must be last, max or prod, got {self.aggregate!r}")
        if self.task not in ("builtin", "gsm8k"):
            raise ValueError(f"task must be 'builtin' or 'gsm8k', got {self.task!r}")

    @property
    def temperature_list(self) -> list[float]:
        return _floats("temperatures", self.temperatures)

    @property
    def threshold_list(self) -> list[float]:
        return _floats("thresholds", self.thresholds)

    @property
    def accept_list(self) -> list[float]:
        return _floats("accepts", self.accepts)


def _floats(name: str, text: str) -> list[float]:
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` right of ``n`` samples (Chen et al. 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def error_taxonomy(text: str, reference: str) -> str:
    """Kind of the first step where ``text`` leaves ``reference``: ``result`` (the arithmetic of
    its annotation is wrong), ``operator``, ``operand``, ``format`` (no or broken annotation,
    runaway), or ``answer`` (every step agrees, the final line does not)."""
    got, ref = parse_annotations(text), parse_annotations(reference)
    for i, r in enumerate(ref):
        if i >= len(got):
            return "format"
        g = got[i]
        if not g.result.strip():
            return "format"
        if holds_error(f"<<{g.text}>>"):
            return "result"
        if g.expr.replace(" ", "") == r.expr.replace(" ", ""):
            continue
        nums = lambda e: [x for x in "".join(c if c.isdigit() or c == "." else " " for c in e).split()]  # noqa: E731
        if nums(g.expr) == nums(r.expr) and _operators(g.expr) != _operators(r.expr):
            return "operator"
        return "operand"
    return "answer"


def _operators(expr: str) -> str:
    """The arithmetic operators of an annotation's expression, in order (``"-+"`` for ``a-b+c``)."""
    return "".join(c for c in expr if c in "+-*/")


def _problems(cfg: DiagnoseConfig):
    if cfg.task == "builtin":
        return list(generate_problems(cfg.n, seed=cfg.seed, split="test"))
    return list(load_gsm8k("test"))[: cfg.n]


def _sampling(cfg: DiagnoseConfig, policy, problems) -> dict:
    prompts = [format_prompt(p.question) for p in problems]
    out = {}
    for t in cfg.temperature_list:
        correct = [0] * len(problems)
        effects = []
        for s in range(cfg.samples):
            gens = generate(policy, prompts, rewind=True, do_sample=True, temperature=t, seed=cfg.seed * 1000 + s,
                            max_new_tokens=cfg.max_new_tokens)
            for i, (g, p) in enumerate(zip(gens, problems)):
                correct[i] += int(answers_match(extract_answer(g.text), p.answer))
            effects.append(backtrack_effects(policy, gens))
        ks = [k for k in (1, 4, 8, 16) if k <= cfg.samples]
        eff = with_rates({key: sum(e[key] for e in effects) for key in EFFECT_KEYS})
        out[f"{t:g}"] = {"pass_at_k": {str(k): sum(pass_at_k(cfg.samples, c, k) for c in correct) / len(problems)
                                       for k in ks}, "backtrack_runs": eff}
    return out


def _sampling_job(cfg: dict) -> dict:
    """``_sampling`` as a side job (``policy.workers.side_job``): loads the run's policy itself."""
    cfg = DiagnoseConfig(**cfg)
    policy, _ = load_run(Path(cfg.run))
    policy.model.eval()
    return _sampling(cfg, policy, _problems(cfg))


def _methods(cfg: DiagnoseConfig, out: Path, policy, verifier, problems, log) -> tuple[dict, list[dict]]:
    res = out / "results.jsonl"
    lim = {"max_depth": cfg.max_depth, "max_step_tokens": cfg.max_step_tokens}
    beam = {"width": cfg.width, "samples": cfg.beam_samples, "temperature": cfg.search_temperature, **lim}
    wm = cfg.width * cfg.beam_samples
    H = policy.hidden_size
    plan = {
        "greedy": ("decode", None, {}),
        "vote@8 majority": ("best_of_n", None, {"n": 8, "vote": "majority", "temperature": cfg.search_temperature, **lim}),
        "vote@8 verifier": ("best_of_n", verifier, {"n": 8, "vote": "weighted", "temperature": cfg.search_temperature, **lim}),
        f"vote@{wm} majority": ("best_of_n", None, {"n": wm, "vote": "majority", "temperature": cfg.search_temperature, **lim}),
        "beam verifier": ("beam", verifier, {**beam, "rank": "verifier", "aggregate": cfg.aggregate}),
        "beam logprob": ("beam", None, {**beam, "rank": "logprob"}),
        "beam random": ("beam", RandomRanker(cfg.seed, H), {**beam, "rank": "verifier", "aggregate": "last"}),
        "beam oracle": ("beam", CheckerOracle(H), {**beam, "rank": "verifier", "aggregate": "max"}),
    }
    sweep = [(t, f"beam verifier τ={t:g}{KEEP}", "beam", verifier, {**beam, "rank": "verifier", "aggregate": cfg.aggregate,
                                                               "keep_last": True})
             for t in cfg.threshold_list if t < 1.0]
    sweep += [(t, f"vote@8 verifier τ={t:g}", "best_of_n", verifier,
               {"n": 8, "vote": "weighted", "temperature": cfg.search_temperature, **lim})
              for t in cfg.threshold_list if t < 1.0]
    # the ceiling of step pruning: the checker (P in {0, 1}) prunes every step it sees is wrong
    sweep.append((0.5, f"beam oracle τ=0.5{KEEP}", "beam", CheckerOracle(H),
                  {**beam, "rank": "verifier", "aggregate": "max", "keep_last": True}))
    m = cfg.accept_samples or cfg.beam_samples
    shape = "" if m == cfg.beam_samples else f" W{cfg.width} M{m}"  # another M: not a pruned form of the beam
    lazy = [(1.0, f"beam verifier{shape}{LAZY}{a:g}", "beam", verifier,
             {**beam, "samples": m, "rank": "verifier", "aggregate": cfg.aggregate, "accept": a})
            for a in cfg.accept_list]
    # Rows another search's tree already holds are replayed from it (``evaluate``'s ``replays``; a
    # problem whose replay is not exact runs live below): the majority vote counts the verifier
    # vote's chains, and a pruned search is its τ = 1 search replayed at τ. A lazy beam keeps other
    # nodes than the full one, so its replays are seldom exact: it runs live.
    replays = {"vote@8 verifier": [("vote@8 majority", 1.0, {"vote": "majority"})]}
    for t, name, _, _, knobs in sweep:
        replays.setdefault(name.split(" τ=")[0], []).append((name, t, {"keep_last": True} if knobs.get("keep_last") else {}))
    sweep += lazy
    if cfg.rewrite:  # coverage: rewrites back up into a rejected step; the oracle's show what they can add
        r = cfg.rewrite
        sweep += [(1.0, f"beam verifier{REWRITE}{r}", "beam", verifier,
                   {**beam, "rank": "verifier", "aggregate": cfg.aggregate, "rewrite": r}),
                  (1.0, f"beam oracle{REWRITE}{r}", "beam", CheckerOracle(H),
                   {**beam, "rank": "verifier", "aggregate": "max", "rewrite": r})]
        # lazy siblings pay for the rewrites: the tokens a beam saves once a child is accepted
        sweep += [(1.0, f"{name}{REWRITE}{r}", "beam", ver, {**knobs, "rewrite": r}) for _, name, _, ver, knobs in lazy]
    order = list(plan) + [name for _, name, *_ in sweep]
    todo = sorted(plan.items(), key=lambda kv: kv[0] not in replays)  # the recorded searches first
    todo += [(name, (method, ver, knobs)) for t, name, method, ver, knobs in sweep]
    thresholds = {name: t for t, name, *_ in sweep}
    rows, greedy = {}, []
    for name, (method, ver, knobs) in todo:
        log(f"[diagnose] {name}")
        rs = evaluate(problems, policy=policy, verifier=ver, method=method, out=res, tag=name,
                      threshold=thresholds.get(name, 1.0), seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                      progress=False, batch_size=64 if method == "decode" else 8, replays=replays.get(name, ()),
                      trees_dir=out / TREES if name in LOSS_BEAMS or REWRITE in name else None, **knobs)
        rows[name] = method_row(rs)
        greedy = rs if name == "greedy" else greedy
    for name in (matched_vote_name(rows, b) for b in rewrite_beams(rows)):  # each one's matched-budget peer
        if name not in rows:
            log(f"[diagnose] {name}")
            n = int(name.split("@")[1].split()[0])
            rs = evaluate(problems, policy=policy, verifier=None, method="best_of_n", out=res, tag=name, seed=cfg.seed,
                          max_new_tokens=cfg.max_new_tokens, progress=False, batch_size=8, n=n, vote="majority",
                          temperature=cfg.search_temperature, **lim)
            rows[name] = method_row(rs)
            order.append(name)
    rows = {name: rows[name] for name in order}
    return rows, greedy


def rewrite_beams(rows) -> list[str]:
    """The verifier beams with rewrites among ``rows`` (names), plain or with lazy siblings."""
    return [k for k in rows if k.startswith("beam verifier") and REWRITE in k]


def matched_vote_name(rows: dict, name: str) -> str:
    """The majority vote at row ``name``'s generated tokens: vote@n with n = 8 × (its tokens /
    vote@8's), rounded, at least 8."""
    per = rows["vote@8 majority"]["tokens_generated"] / 8
    return f"vote@{max(8, round(rows[name]['tokens_generated'] / per)) if per else 8} majority"


LOSS_BEAMS = ("beam verifier", "beam oracle")  # their trees are kept (out/trees/) and read by beam_losses
TREES = "trees"
KEEP = " keep-last"  # pruned beams keep the best pruned child when nothing else is left (BeamConfig.keep_last)
REWRITE = " rewrite="  # a beam whose children are all rejected backs up into its best child's step (BeamConfig.rewrite)
LAZY = " lazy accept="  # a beam draws its next child only while none of its children scores below it (BeamConfig.accept)


def pruning_savings(methods: dict) -> list[dict]:
    """Per pruned search (beam / vote@8 with the verifier, the beam pruned by the checker as an
    oracle, and the beam with lazy siblings — its threshold is ``accept``): the threshold that cuts
    the most generated tokens while staying within 1 point of its τ = 1 accuracy, with that cut
    (None if none does), and every pruned row's cut as ``rows``."""
    out = []
    for base, mark, search in (("beam verifier", " τ=", "beam verifier"), ("vote@8 verifier", " τ=", "vote@8 verifier"),
                               ("beam oracle", " τ=", "beam oracle"), ("beam verifier", LAZY, "beam verifier lazy")):
        if base not in methods:
            continue
        b = methods[base]
        best, rows = None, []
        for name, m in methods.items():
            if not name.startswith(base + mark) or REWRITE in name:
                continue
            cut = 1.0 - m["tokens_generated"] / b["tokens_generated"] if b["tokens_generated"] else 0.0
            row = {"threshold": float(name[len(base + mark):].split()[0]), "token_cut": cut,
                   "accuracy_change": m["accuracy"] - b["accuracy"]}
            rows.append(row)
            if m["accuracy"] >= b["accuracy"] - 0.01 + 1e-12 and (best is None or cut > best["token_cut"]):
                best = row
        if rows:
            out.append({"search": search, "best": best, "rows": rows})
    return out


def misordered_by_operator(scores, data) -> dict[str, dict]:
    """Where the sibling ranking fails: every (wrong, right) pair of sibling steps, filed under the
    operators of the right step's annotation (``"+"``, ``"*"``, ``"-+"`` for ``a-b+c``; ``"none"``
    without one), with the share the ranker scores the wrong step at or below the right one (a tie
    counts half, as in the sibling AUROC: 1 − this share, pair-weighted, is that AUROC)."""
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(data.groups):
        groups.setdefault(g, []).append(i)
    out: dict[str, list[float]] = {}
    for rows in groups.values():
        for r in (i for i in rows if not data.labels[i]):
            anns = parse_annotations(data.texts[r])
            op = _operators(anns[0].expr) if anns else "none"
            for w in (i for i in rows if data.labels[i]):
                out.setdefault(op or "none", []).append(1.0 if scores[w] < scores[r] else 0.5 if scores[w] == scores[r] else 0.0)
    return {op: {"pairs": len(v), "misordered": sum(v) / len(v)} for op, v in sorted(out.items(), key=lambda kv: -len(kv[1]))}


def _paired(rows: dict, a: str, b: str) -> dict:
    m = mcnemar(rows[a]["by_problem"], rows[b]["by_problem"])
    return {"a": a, "b": b, "difference": rows[a]["accuracy"] - rows[b]["accuracy"], "only_a": m.only_a,
            "only_b": m.only_b, "p_value": m.p_value}


def run_diagnose(cfg: DiagnoseConfig, *, log=print) -> dict:
    """Measure everything in the module docstring; write and return ``diagnose.json``'s content."""
    run = Path(cfg.run)
    policy, verifier = load_run(run)
    if verifier is None:
        raise ValueError(f"{run} has no verifier: train one first (rewind train-verifier --policy {run} --out ...)")
    out = Path(cfg.out) if cfg.out else run / "diagnose"
    out.mkdir(parents=True, exist_ok=True)
    problems = _problems(cfg)
    policy.model.eval()
    # pass@k's samples are the longest part: a side job draws them while this process searches
    side = cfg.workers > 1 and can_run_side_jobs() and next(policy.model.parameters()).device.type == "cpu"
    log("[diagnose] sampling for pass@k" + (" (in a second process)" if side else ""))
    with (side_job(_sampling_job, (dataclasses.asdict(cfg),))
          if side else nullcontext()) as future:
        sampling = None if side else _sampling(cfg, policy, problems)
        rows, greedy = _methods(cfg, out, policy, verifier, problems, log)
        log("[diagnose] sibling steps")
        steps = collect_steps(policy, problems, width=cfg.width, samples=cfg.beam_samples,
                              temperature=cfg.search_temperature, seed=cfg.seed + 7, max_depth=cfg.max_depth,
                              max_step_tokens=cfg.max_step_tokens, progress=False)
    sampling = future.result() if side else sampling
    solution = {p.id: p.solution for p in problems}
    taxonomy: dict[str, int] = {}
    for g in greedy:  # the greedy row's decoded text: where it first leaves the reference
        if not g["correct"]:
            kind = error_taxonomy(g["text"] or "", solution[g["problem_id"]])
            taxonomy[kind] = taxonomy.get(kind, 0) + 1
    if isinstance(verifier, StepVerifier):
        sib = evaluate_steps(verifier, steps, thresholds=cfg.threshold_list, seed=cfg.seed)
        sib["misordered_by_operator"] = misordered_by_operator(score_data(verifier, steps), steps)
    else:
        sib = {"note": "a token-level head: sibling AUROC needs a step verifier (rewind train-verifier --kind step)"}
    wm = cfg.width * cfg.beam_samples
    others = dict.fromkeys(["greedy", "vote@8 majority", f"vote@{wm} majority", "beam logprob"])  # W×M may be 8
    paired = [_paired(rows, "beam verifier", b) for b in others]
    if cfg.rewrite:
        rw = f"beam verifier{REWRITE}{cfg.rewrite}"
        paired += [_paired(rows, rw, "beam verifier"), _paired(rows, f"beam oracle{REWRITE}{cfg.rewrite}", "beam oracle")]
        for b in rewrite_beams(rows):  # against greedy and the vote that spends its tokens
            paired += [_paired(rows, b, "greedy"), _paired(rows, b, matched_vote_name(rows, b))]
    result = {"config": dataclasses.asdict(cfg), "n": len(problems), "greedy_error_taxonomy": taxonomy,
              "sampling": sampling, "methods": {k: {kk: vv for kk, vv in v.items() if kk != "by_problem"}
                                                for k, v in rows.items()},
              "paired": paired, "siblings": sib}
    result["pruning"] = pruning_savings(result["methods"])
    result["beam_losses"] = beam_losses(out / TREES, problems)
    result["rewrite_use"] = rewrite_use(out / TREES, problems, [k for k in rows if REWRITE in k])
    result["limits"] = limits_text(result)
    atomic_write_json(out / "diagnose.json", result)
    atomic_write_text(out / "diagnose.md", diagnose_markdown(result))
    _plot(result, out / "diagnose.png")
    log(diagnose_markdown(result))
    return result


def beam_losses(trees: Path, problems) -> dict:
    """Per beam of ``LOSS_BEAMS``: where it lost each problem (``experiments.studies.beam_losses``),
    read from the trees this run solved (a problem whose row was reused from an earlier run without
    its tree is left out: ``n`` says how many were read)."""
    out = {}
    for name in LOSS_BEAMS:
        cases = [classify(load_tree(f), p.answer) for p in problems if (f := trees / f"{name}-{p.id}.json").exists()]
        if cases:
            out[name] = summarize(cases)
    return out


def rewrite_use(trees: Path, problems, names) -> dict:
    """Per rewrite beam of ``names``: ``beam_losses.rewrite_events`` summed over the trees this run
    solved (``n`` trees read)."""
    out = {}
    for name in names:
        files = [f for p in problems if (f := trees / f"{name}-{p.id}.json").exists()]
        if files:
            total = sum((rewrite_events(load_tree(f)) for f in files), Counter())
            out[name] = {"n": len(files), **{k: total.get(k, 0) for k in REWRITE_EVENTS}}
    return out


REWRITE_EVENTS = ("right_parents", "all_wrong", "fired", "fired_all_wrong", "missed", "right_drawn", "right_kept")


def limits_text(r: dict) -> str:
    """What limits search on this run, in words, from the numbers."""
    m = r["methods"]
    g, o, v, lp = (m[k]["accuracy"] for k in ("greedy", "beam oracle", "beam verifier", "beam logprob"))
    k_max = max((int(k) for s in r["sampling"].values() for k in s["pass_at_k"]), default=1)
    best_pass = max(s["pass_at_k"].get(str(k_max), 0.0) for s in r["sampling"].values())
    sib = (r["siblings"].get("rankers") or {}).get("verifier", {}).get("sibling_auroc")
    out = [f"Greedy solves {100 * g:.1f}%; the policy's samples hold the answer for up to {100 * best_pass:.1f}% "
           f"(pass@{k_max}), and a beam ranked by the step checker (an oracle) reaches {100 * o:.1f}%."]
    if o - g < 0.05:
        out.append("Even the oracle beam barely beats greedy: the policy's steps, not the ranking, limit search — "
                   "a stronger policy (or more samples per step) is the lever.")
    if sib is not None:
        out.append(f"The verifier orders sibling steps with AUROC {sib:.3f}; the verifier beam reaches {100 * v:.1f}% "
                   f"({100 * v / o if o else 0:.0f}% of the oracle beam; log-prob ranking {100 * lp:.1f}%).")
        if sib < 0.85:
            out.append("Sibling ranking is below 0.85: the verifier misses errors the checker sees — more own-step "
                       "labels or more capacity are the lever.")
    kinds = r["greedy_error_taxonomy"]
    if kinds:
        top = max(kinds, key=kinds.get)
        unseen = sum(kinds.get(k, 0) for k in ("operator", "operand", "answer"))
        out.append(f"Most greedy errors are of kind '{top}' ({kinds[top]} of {sum(kinds.values())}); "
                   f"the kinds the checker cannot see (operator, operand, answer: {unseen} here) bound what any "
                   "checker-trained verifier can fix.")
    if v <= o and o > 0 and v / o >= 0.8:
        out.append("The verifier beam is within 20% of the oracle: the remaining gap is the policy's coverage.")
    lost = (r.get("beam_losses") or {}).get("beam verifier")
    if lost:
        c, wrong = lost["counts"], lost["n"] - lost["counts"]["solved"]
        if wrong:
            orc = (r["beam_losses"].get("beam oracle") or {}).get("counts", {})
            out.append(f"Of the {wrong} problems the verifier beam gets wrong ({lost['n']} trees read), it dropped the "
                       f"last right path in {c['dropped']} (the ranking kept only wrong steps; median depth "
                       f"{lost['dropped_median_depth']}), picked a wrong finished answer over a right one in {c['pick']}, "
                       f"followed an error the checker cannot see in {c['invisible']}, and drew no right step from a "
                       f"right path in {c['coverage']}" + (f" (the oracle beam: {orc.get('coverage', 0)} coverage, "
                                                           f"{orc.get('invisible', 0)} invisible, {orc.get('pick', 0)} "
                                                           "pick)" if orc else "") + ".")
    rw = sorted(k for k in m if k.startswith("beam verifier" + REWRITE))
    if rw and f"beam oracle{REWRITE}{rw[0][len('beam verifier' + REWRITE):]}" in m:
        name, k = rw[0], rw[0][len("beam verifier" + REWRITE):]
        ro, rv = m[f"beam oracle{REWRITE}{k}"], m[name]
        tok = lambda a, b: 100 * (m[a]["tokens_generated"] / m[b]["tokens_generated"] - 1) if m[b]["tokens_generated"] else 0  # noqa: E731
        out.append(f"Rewrites ({k} per beam whose children are all rejected, backing up to the best child's least "
                   f"likely token) take the oracle beam from {100 * o:.1f}% to {100 * ro['accuracy']:.1f}% "
                   f"({tok(f'beam oracle{REWRITE}{k}', 'beam oracle'):+.0f}% tokens) and the verifier beam from "
                   f"{100 * v:.1f}% to {100 * rv['accuracy']:.1f}% ({tok(name, 'beam verifier'):+.0f}% tokens).")
        use = r.get("rewrite_use") or {}
        if name in use and use[name]["fired"]:
            u, ou = use[name], use.get(f"beam oracle{REWRITE}{k}")
            out.append(f"On right paths the verifier beam's drawn children were all wrong {u['all_wrong']} times: it "
                       f"fired rewrites in {u['fired_all_wrong']} of them (missed {u['missed']}; "
                       f"{u['fired'] - u['fired_all_wrong']} more firings beside a right child); of its {u['fired']} "
                       f"firings, {u['right_drawn']} drew a right rewrite and the ranking kept {u['right_kept']} of those"
                       + (f" (the oracle beam: {ou['right_drawn']} drawn of {ou['fired']} firings, "
                          f"{ou['right_kept']} kept)" if ou else "") + ".")
        for b in rewrite_beams(m) if "vote@8 majority" in m else []:
            vote, rb = matched_vote_name(m, b), m[b]
            if vote in m:
                out.append(f"'{b}' reaches {100 * rb['accuracy']:.1f}% at {rb['tokens_generated']:.0f} tokens: "
                           f"{100 * (rb['accuracy'] - g):+.1f} points over greedy and "
                           f"{100 * (rb['accuracy'] - m[vote]['accuracy']):+.1f} over the majority vote that spends its "
                           f"tokens ({vote}, {100 * m[vote]['accuracy']:.1f}%).")
    for p in r.get("pruning", []):
        b = p["best"]
        if p["search"] == "beam oracle":
            o_row = max(p["rows"], key=lambda x: x["token_cut"])
            out.append(f"A perfect step pruner (the checker as oracle, τ = {o_row['threshold']:g}) cuts "
                       f"{100 * o_row['token_cut']:.0f}% of the oracle beam's generated tokens at "
                       f"{100 * o_row['accuracy_change']:+.1f} points: only the tokens after a step the checker sees is "
                       "wrong can go, so no pruning of drawn steps by a checker-trained verifier can cut more on "
                       "this policy.")
        elif p["search"] == "beam verifier lazy":
            out.append("Lazy siblings (a beam draws its next child only while none of its children scores below "
                       "`accept`) " + ("cost more than 1 point at every accept measured." if b is None else
                                       f"at accept = {b['threshold']:g} cut {100 * b['token_cut']:.0f}% of generated "
                                       f"tokens at {100 * b['accuracy_change']:+.1f} points: the siblings of steps the "
                                       "verifier accepts are never drawn."))
        elif b is None:
            out.append(f"Pruning the {p['search']} at any threshold measured costs more than 1 point.")
        else:
            out.append(f"Pruning the {p['search']} at τ = {b['threshold']:g} cuts {100 * b['token_cut']:.0f}% of "
                       f"generated tokens at {100 * b['accuracy_change']:+.1f} points.")
    return " ".join(out)


def diagnose_markdown(r: dict) -> str:
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    f3 = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [f"## Diagnose — {r['n']} held-out problems\n", r["limits"] + "\n",
             "| method | accuracy | 95% CI | tokens generated / problem |", "|---|---|---|---|"]
    for name, m in r["methods"].items():
        lines.append(f"| {name} | {m['correct']}/{m['n']} = {pct(m['accuracy'])} | {pct(m['ci95'][0])}–"
                     f"{pct(m['ci95'][1])} | {m['tokens_generated']:.1f} |")
    lines += ["", "| paired (McNemar) | difference | only A right | only B right | p |", "|---|---|---|---|---|"]
    for p in r["paired"]:
        lines.append(f"| {p['a']} vs {p['b']} | {100 * p['difference']:+.1f} pts | {p['only_a']} | {p['only_b']} | "
                     f"{p['p_value']:.2g} |")
    lines += ["", "| temperature | pass@1 | pass@4 | pass@8 | pass@16 | ⟨b⟩-runs | fix rate | harm rate |",
              "|---|---|---|---|---|---|---|---|"]
    for t, s in r["sampling"].items():
        pk, b = s["pass_at_k"], s["backtrack_runs"]
        lines.append(f"| {t} | " + " | ".join(pct(pk.get(k)) for k in ("1", "4", "8", "16")) +
                     f" | {b['runs']} | {pct(b['fix_rate'])} | {pct(b['harm_rate'])} |")
    sib = r["siblings"]
    if "rankers" in sib:
        lines += ["", f"Sibling steps: {sib['n_steps']} ({sib['n_wrong']} wrong; kinds {sib['kinds']}), "
                      f"{sib['sibling_pairs']} (wrong, right) sibling pairs in {sib['sibling_groups']} groups.", "",
                  "| ranker of P(error) | sibling AUROC | pooled AUROC |", "|---|---|---|"]
        for name, x in sib["rankers"].items():
            lines.append(f"| {name} | {f3(x['sibling_auroc'])} | {f3(x['pooled_auroc'])} |")
        mis = sib.get("misordered_by_operator") or {}
        if mis:
            lines += ["", "Verifier, (wrong, right) sibling pairs misordered, by the right step's operator: " +
                      ", ".join(f"`{op}` {pct(m['misordered'])} of {m['pairs']}" for op, m in mis.items()) + "."]
        lines += ["", "| threshold | false prunes (right steps) | prunes of wrong steps |", "|---|---|---|"]
        for p in sib["prune"]:
            lines.append(f"| {p['threshold']:g} | {pct(p['false_prune_rate'])} | {pct(p['wrong_prune_rate'])} |")
    else:
        lines += ["", sib.get("note", "")]
    if r.get("beam_losses"):
        lines += ["", "Where the beams lose (their trees, labelled by the step checker):", "",
                  losses_markdown(r["beam_losses"])]
    lines += ["", "Greedy errors by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(r["greedy_error_taxonomy"].items()))
                                              or "none")]
    return "\n".join(lines) + "\n"


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(r["methods"])
    acc = [100 * r["methods"][k]["accuracy"] for k in names]
    err = [[max(0.0, 100 * (r["methods"][k]["accuracy"] - r["methods"][k]["ci95"][0])) for k in names],
           [max(0.0, 100 * (r["methods"][k]["ci95"][1] - r["methods"][k]["accuracy"])) for k in names]]
    a.barh(names, acc, xerr=err, color=["#c44" if "oracle" in k else "#48c" for k in names])
    a.invert_yaxis()
    a.set_xlabel("accuracy (%) with 95% CI")
    a.set_title(f"{r['n']} held-out problems")
    rankers = (r["siblings"].get("rankers") or {})
    if rankers:
        ks = list(rankers)
        b.bar(ks, [rankers[k]["sibling_auroc"] or 0 for k in ks], color="#4a4")
        b.axhline(0.5, color="gray", ls="--", lw=1)
        b.axhline(0.85, color="#c44", ls=":", lw=1)
        b.set_ylim(0, 1)
        b.set_ylabel("within-problem sibling AUROC")
        b.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
