"""Where a beam loses a problem, read off its search tree with the step checker.

A verifier beam that misses a problem the oracle beam solves has lost it in one of four places, and
each asks for a different fix. For every node the checker labels its *path* (``step_label`` on each
step, with the prefix before it): right when no step on it holds an error the checker sees. Then a
wrong answer is, in this order:

- ``pick``: a finished answer in the tree is right, the beam returned another (the final ranking);
- ``dropped``: at the deepest depth a right path reached, none of its nodes was expanded (not kept
  in the beam, or pruned) while wrong ones went on — the ranking lost the last right path;
- ``invisible``: a right path (to the checker) finished with a wrong answer — an operand, operator
  or answer-line error no checker-trained verifier can see;
- ``coverage``: every right path was expanded and the policy drew no right next step from any of
  them (also when the root's children are all wrong) — no ranking could have helped.

``dropped`` records the depth, the verifier's step P(error) of the best right step it dropped there
and the worst of the wrong steps it kept at that depth instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from statistics import median

from policy.data.grading import answers_match
from search.tree import ROOT, Tree
from verifier.step_data import step_label

__all__ = ["KINDS", "classify", "losses_markdown", "path_errors", "rewrite_events", "summarize"]

KINDS = ("solved", "pick", "dropped", "invisible", "coverage")


def path_errors(tree: Tree) -> list[bool]:
    """Per node: True when a step on its path (root excluded) holds an error the checker sees."""
    prompt = tree.nodes[ROOT].text
    out = [False] * len(tree.nodes)
    for n in tree.nodes[1:]:  # a child's id is above its parent's: parents are labelled first
        stop = "max_step_tokens" if n.stop_reason == "max_step_tokens" else "newline"
        wrong = bool(step_label(prompt, tree.solution_text(n.parent), n.text, stop)[0])
        out[n.id] = out[n.parent] or wrong
    return out


def classify(tree: Tree, gold: str) -> dict:
    """``{"kind": one of KINDS, "depth": int | None, "p_right": float | None, "p_kept": float | None}``
    for one beam search's tree and the problem's gold answer (see the module docstring)."""
    chosen = tree.chosen[-1] if tree.chosen else None
    answer = tree.nodes[chosen].answer if chosen is not None else None
    out = {"kind": "solved", "depth": None, "p_right": None, "p_kept": None}
    if answer is not None and answers_match(answer, gold):
        return out
    nodes = tree.nodes
    if any(n.status == "terminal" and n.answer is not None and answers_match(n.answer, gold) for n in nodes):
        return {**out, "kind": "pick"}
    wrong = path_errors(tree)
    right = [n for n in nodes[1:] if not wrong[n.id]]
    if not right:
        return {**out, "kind": "coverage", "depth": 1}
    deepest = max(n.depth for n in right)
    at = [n for n in right if n.depth == deepest]
    expanded = [n for n in at if tree.children[n.id]]
    dropped = [n for n in at if n.status in ("open", "pruned") and not tree.children[n.id]]
    if dropped and not expanded:  # the beam went on with wrong paths only
        kept = [n for n in nodes if n.depth == deepest and tree.children[n.id]]
        p_right = [float(n.p_backtrack) for n in dropped if n.p_backtrack is not None]
        p_kept = [float(n.p_backtrack) for n in kept if n.p_backtrack is not None]
        return {**out, "kind": "dropped", "depth": deepest, "p_right": min(p_right) if p_right else None,
                "p_kept": max(p_kept) if p_kept else None}
    if any(n.status == "terminal" for n in at):
        return {**out, "kind": "invisible", "depth": deepest}
    return {**out, "kind": "coverage", "depth": deepest + 1}


def rewrite_events(tree: Tree) -> Counter:
    """Where a beam with rewrites (``BeamConfig.rewrite``) spends them, on right paths only (nodes
    the checker finds no error on). Per right node with children: ``all_wrong`` when its drawn
    children are all wrong; ``fired`` when it also has rewrite children (``forced`` or ``banned``);
    ``fired_all_wrong`` both; ``missed`` all wrong and not fired; ``right_drawn`` a rewrite child is
    right; ``right_kept`` that right rewrite was then expanded or finished — the ranking kept it."""
    wrong = path_errors(tree)
    c = Counter()
    for node in tree.nodes:
        kids = tree.children[node.id]
        if not kids or wrong[node.id]:
            continue
        drawn = [k for k in kids if not tree.nodes[k].forced and tree.nodes[k].banned is None]
        rewrites = [k for k in kids if k not in drawn]
        all_wrong = bool(drawn) and all(wrong[k] for k in drawn)
        c["right_parents"] += 1
        c["all_wrong"] += all_wrong
        if not rewrites:
            c["missed"] += all_wrong
            continue
        c["fired"] += 1
        c["fired_all_wrong"] += all_wrong
        right = [k for k in rewrites if not wrong[k]]
        c["right_drawn"] += bool(right)
        c["right_kept"] += any(tree.children[k] or tree.nodes[k].status == "terminal" for k in right)
    return c


def summarize(cases: Iterable[dict]) -> dict:
    """Counts per kind; for ``dropped``, the median depth, and the medians of the verifier's step
    P(error) on the right step it dropped (its best one) and on the wrong steps it kept (their
    worst): a high first one is a right step misjudged, a low second one a wrong step missed."""
    cases = list(cases)
    counts = Counter(c["kind"] for c in cases)
    drops = [c for c in cases if c["kind"] == "dropped"]

    def med(key: str) -> float | None:
        xs = [c[key] for c in drops if c[key] is not None]
        return median(xs) if xs else None

    return {"n": len(cases), "counts": {k: counts.get(k, 0) for k in KINDS},
            "dropped_median_depth": median(c["depth"] for c in drops) if drops else None,
            "dropped_median_p_right": med("p_right"), "dropped_median_p_kept": med("p_kept")}


def losses_markdown(by_method: dict[str, dict]) -> str:
    """One table row per beam: its wrong answers split by where they were lost."""
    lines = ["| beam | problems | solved | lost at the final pick | right path dropped by the ranking | "
             "checker-invisible error | no right step drawn (coverage) |", "|---|---|---|---|---|---|---|"]
    for name, s in by_method.items():
        c = s["counts"]
        lines.append(f"| {name} | {s['n']} | {c['solved']} | {c['pick']} | {c['dropped']} | {c['invisible']} | "
                     f"{c['coverage']} |")
    return "\n".join(lines)
