"""How the policy's own wrong steps are wrong, and how well token heads order its sibling steps.

``python -m experiments.studies.token_head_probe --labels RUN/verifier_train/steps.pt [--heads DIR,DIR,...]``
reads a verifier's own-step labels (``steps.pt``: the policy's sibling steps on
the verifier's problems, labelled by the step checker) and prints

- how the distinct wrong one-annotation lines are wrong: the result of a neighbouring fact (an
  operand ±1 or ±2), another operator's result, the right result off by 1-10, else — the shape the
  token head's ``facts`` slips copy (``verifier.token_steps``);
- for each token head folder (``.../token_head``): its sibling AUROC on these groups, read through
  the step's token ids alone (the features zero, as it is trained), and the share of (wrong, right)
  sibling pairs it misorders, by the right step's operator.

No policy forward: the ids are in the file. The labels come from the verifier's own problems
(validation split), never from the test problems search is reported on.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.flags import add_config_flags, config_from_args
from policy.data.grading import evaluate, parse_annotations
from search.knobs import knob
from verifier.step_data import StepData
from verifier.step_head import StepVerifier
from verifier.token_steps import PackedTokens, TokenSteps

_BINARY = re.compile(r"\s*(\d+)\s*([-+*/])\s*(\d+)\s*")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: None if b == 0 else evaluate(f"{a}/{b}")}


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    labels: str = knob(None, "a verifier's own-step labels (RUN/verifier_train/steps.pt)")
    heads: str = knob("", "comma-separated token head folders (.../token_head)")

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("--labels is required")


def wrong_kind(text: str) -> str | None:
    """How a one-annotation line's result is wrong (None: right, or not one binary annotation)."""
    anns = parse_annotations(text)
    if len(anns) != 1:
        return None
    a = anns[0]
    try:
        right, got = evaluate(a.expr), evaluate(a.result)
    except (ValueError, ZeroDivisionError, SyntaxError):
        return None
    if got == right:
        return None
    m = _BINARY.fullmatch(a.expr)
    if not m:
        return "other expression"
    x, op, y = int(m.group(1)), m.group(2), int(m.group(3))
    near = {_OPS[op](x + d, y) for d in (-2, -1, 1, 2)} | {_OPS[op](x, y + d) for d in (-2, -1, 1, 2)}
    if got in near:
        return f"neighbouring fact ({op})"
    if got in {_OPS[o](x, y) for o in _OPS if o != op}:
        return "another operator's result"
    diff = abs(got - right)
    return f"off by {int(diff)}" if diff <= 10 and diff == int(diff) else "else"


def order_by_operator(head: StepVerifier, data: StepData) -> tuple[float, dict[str, tuple[float, int]]]:
    """(sibling AUROC, {operator: (share of pairs misordered, pairs)}) of ``head`` read on the ids alone."""
    steps = TokenSteps()
    for v, label, g in zip(data.views, data.labels, data.groups, strict=True):
        steps.ids.append(tuple(v.ids) or (0,))
        steps.labels.append(label)
        steps.groups.append(g)
        steps.depth.append(v.depth)
    packed = PackedTokens(steps, hidden_size=head.hidden_size, max_tokens=head.max_tokens, digit_ids=head.digit_ids)
    with torch.no_grad():
        z = torch.cat([head.raw_logits(packed.batch(list(range(i, min(len(steps), i + 1024)))))
                       for i in range(0, len(steps), 1024)])
    groups: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(steps.groups):
        groups[g].append(i)
    pairs, bad = Counter(), Counter()
    for rows in groups.values():
        for a in (r for r in rows if steps.labels[r] == 0):
            m = re.search(r"<<[^>]*?([-+*/])", data.texts[a])
            op = m.group(1) if m else "none"
            for b in (r for r in rows if steps.labels[r] == 1):
                pairs[op] += 1
                bad[op] += 1.0 if z[a] > z[b] else 0.5 if z[a] == z[b] else 0.0
    n = sum(pairs.values())
    return 1 - sum(bad.values()) / max(n, 1), {op: (bad[op] / pairs[op], pairs[op]) for op in pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_flags(ap, ProbeConfig)
    try:
        args = config_from_args(ap.parse_args(argv), ProbeConfig)
    except ValueError as e:
        ap.error(str(e))
    path = Path(args.labels)
    if not path.exists():
        raise SystemExit(f"no labels at {path}")
    data = StepData._unflat(torch.load(path, weights_only=True))
    kinds = Counter(k for k in map(wrong_kind, set(data.texts)) if k is not None)
    total = sum(kinds.values())
    print(f"distinct wrong one-annotation lines: {total}\n\n| how the result is wrong | lines | share |\n|---|---|---|")
    for k, n in kinds.most_common():
        print(f"| {k} | {n} | {100 * n / total:.1f}% |")
    for folder in (Path(h) for h in args.heads.split(",") if h):
        head = StepVerifier.from_folder(folder, json.loads((folder / "verifier_config.json").read_text()))
        head.eval()
        auc, by_op = order_by_operator(head, data)
        ops = ", ".join(f"`{op}` {100 * share:.1f}% of {n}" for op, (share, n) in sorted(by_op.items()))
        print(f"\n{folder}: sibling AUROC {auc:.4f}; pairs misordered by the right step's operator: {ops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
