"""Training the ``StepVerifier`` on the policy's own sibling steps, judged by how it ranks siblings.

The loss is class-balanced BCE plus a within-group pairwise ranking term (RankNet, Burges et al.
2005): for every (wrong, right) pair of siblings, ``softplus(s_right - s_wrong)``, where ``s`` is
the logit of P(error). Minibatches are whole sibling groups, so every pair is in one batch.
Early stopping reads the validation *sibling AUROC* — the decision search makes is which sibling
to keep, and a pooled AUROC can be raised by problem difficulty alone (issue 14).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import warnings
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from policy.atomic import atomic_write_json
from policy.workers import can_run_side_jobs, side_job
from verifier.baselines import CheckerOracle
from verifier.config import VerifierTrainConfig
from verifier.frozen import load_frozen_policy
from verifier.head import tokenizer_fingerprint
from verifier.metrics import auroc
from verifier.splits import reference_problems, split_problems, token_problems, verifier_problems
from verifier.step_data import StepData, add_counterfactuals, collect_steps, reference_steps
from verifier.step_head import PackedSteps, StepBatch, StepEnsemble, StepVerifier, digit_token_ids
from verifier.token_steps import PackedTokens, TokenSteps, token_steps

__all__ = ["batch_of", "calibrate_steps", "calibrated_threshold", "evaluate_steps", "fit_step_verifier", "score_data", "sibling_auroc",
           "step_summary", "train_step_verifier"]

STEP_MAX_TOKENS = 96  # the tail of a step both the feature head and the token head read (part of the token head's key)


def sibling_auroc(scores: Sequence[float], labels: Sequence[int], groups: Sequence[int]) -> dict:
    """Within-group AUROC of ``scores`` as P(error): over every (wrong, right) pair of siblings,
    the share where the wrong one scores higher (ties count half). Groups with one class give
    no pair. Returns ``{"auroc", "pairs", "groups"}`` (``auroc`` None when there is no pair)."""
    by: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for s, y, g in zip(scores, labels, groups, strict=True):
        by[g][int(y)].append(float(s))
    wins = pairs = n_groups = 0
    for right, wrong in by.values():
        if not right or not wrong:
            continue
        r = np.asarray(right)
        for w in wrong:
            wins += float((w > r).sum()) + 0.5 * float((w == r).sum())
        pairs += len(right) * len(wrong)
        n_groups += 1
    return {"auroc": (wins / pairs) if pairs else None, "pairs": pairs, "groups": n_groups}


def batch_of(data: StepData, rows: Sequence[int], head: StepVerifier) -> StepBatch:
    """``head.batch_of`` of ``data``'s rows, gathered from a ``PackedSteps`` store built once per
    ``data`` (equal batches, without a Python loop over rows every time the rows are read)."""
    key = (head.max_tokens, head.digit_ids, len(data))
    cached = data.__dict__.get("_packed")
    if cached is None or cached[0] != key:
        if data.views:  # the store checks every view against the first; the first against the head
            head.check_hidden(data.views[0].hidden)
        cached = (key, PackedSteps(data.views, max_tokens=head.max_tokens, digit_ids=head.digit_ids))
        data.__dict__["_packed"] = cached
    return cached[1].batch(rows)


@torch.no_grad()
def score_data(head: StepVerifier, data: StepData, *, batch_size: int = 512) -> list[float]:
    """P(error) of every row of ``data``."""
    was = head.training
    head.eval()
    out: list[float] = []
    try:
        for i in range(0, len(data), batch_size):
            rows = range(i, min(len(data), i + batch_size))
            out += torch.sigmoid(head(batch_of(data, rows, head))).tolist()
    finally:
        head.train(was)
    return out


def _group_batches(data: StepData, batch_size: int, rng: random.Random) -> list[list[int]]:
    by: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(data.groups):
        by[g].append(i)
    groups = list(by.values())
    rng.shuffle(groups)
    batches, cur = [], []
    for g in groups:
        cur += g
        if len(cur) >= batch_size:
            batches.append(cur)
            cur = []
    if cur:
        batches.append(cur)
    return batches


def _pair_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(s_right - s_wrong)`` over within-group (wrong, right) pairs (0 if none)."""
    same = groups[:, None] == groups[None, :]  # (N, N)
    pair = same & (labels[:, None] > 0.5) & (labels[None, :] < 0.5)  # row wrong, column right
    if not pair.any():
        return logits.sum() * 0.0
    diff = logits[None, :] - logits[:, None]  # (N, N): s_right(col) - s_wrong(row)
    return F.softplus(diff[pair]).mean()


def _train_step(head: StepVerifier, opt, sched, logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor, *,
                pos_weight: torch.Tensor, pair_weight: float) -> float:
    """One optimiser step on class-balanced BCE plus the within-group ranking loss; returns the loss."""
    loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight) + pair_weight * _pair_loss(logits, y, g)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


def _drop_features(batch: StepBatch, p: float) -> StepBatch:
    """Zero the policy features (hidden states, log-probs, entropies) of a random share ``p`` of the
    steps: those steps are judged from their tokens alone, so the token path has to learn to check
    the arithmetic instead of leaning on how surprised the policy was."""
    if p <= 0:
        return batch
    keep = (torch.rand(len(batch)) >= p).float()
    return StepBatch(batch.hidden * keep[:, None, None], batch.scalars * keep[:, None, None], batch.mask, batch.depth,
                     batch.ids, batch.place)


def fit_step_verifier(train: StepData, val: StepData | None, *, hidden_size: int, width: int = 96, layers: int = 2,
                      heads: int = 4, max_tokens: int = STEP_MAX_TOKENS, dropout: float = 0.1, lr: float = 1e-3,
                      weight_decay: float = 0.01, batch_size: int = 256, epochs: int = 30, patience: int = 5,
                      pair_weight: float = 1.0, feature_dropout: float = 0.0, seed: int = 0,
                      fingerprint: str | None = None, digit_ids: Sequence[int] = (), select: str = "best",
                      precision: str = "fp32", tokens: TokenSteps | None = None,
                      progress: bool = True) -> tuple[StepVerifier, list[dict]]:
    """Train a ``StepVerifier``. ``select="best"``: keep the weights of the epoch with the best
    validation sibling AUROC (and stop after ``patience`` epochs without one); ``"last"``: run every
    epoch and keep the final, annealed weights (validation is still measured, for the history).
    ``precision="bf16"``: the training forward runs under bf16 autocast (fp32 weights, loss and
    optimiser; validation scoring in fp32). ``tokens``: token-only sibling steps
    (``verifier.token_steps``), their batches shuffled in among ``train``'s every epoch, read with
    the policy features zero and class-balanced on their own."""
    if select not in ("best", "last"):
        raise ValueError(f"select must be 'best' or 'last', got {select!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if len(train) == 0 or not any(train.labels) or all(train.labels):
        raise ValueError(f"the step verifier needs both right and wrong steps to learn from; got {sum(train.labels)} "
                         f"wrong of {len(train)} (sample more problems or a higher temperature)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = StepVerifier(hidden_size, width=width, layers=layers, heads=heads, max_tokens=max_tokens, dropout=dropout,
                        tokenizer_fingerprint=fingerprint, digit_ids=digit_ids)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    pos = sum(train.labels) / len(train)
    pos_weight = torch.tensor((1 - pos) / max(pos, 1e-6))  # class balance: both classes weigh the same
    labels_all = torch.tensor(train.labels, dtype=torch.float32)
    groups_all = torch.tensor(train.groups)
    n_batches = math.ceil(len(train) / batch_size)
    if tokens is not None and len(tokens):
        if not any(tokens.labels) or all(tokens.labels):
            raise ValueError("the token steps need both right and wrong steps")
        packed = PackedTokens(tokens, hidden_size=hidden_size, max_tokens=max_tokens, digit_ids=head.digit_ids)
        tok_pos = sum(tokens.labels) / len(tokens)
        tok_weight = torch.tensor((1 - tok_pos) / tok_pos)
        tok_labels, tok_groups = torch.tensor(tokens.labels, dtype=torch.float32), torch.tensor(tokens.groups)
        n_batches += math.ceil(len(tokens) / batch_size)
    else:
        tokens = None
    total = epochs * n_batches
    if total >= 20:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    else:  # too few steps for a warm-up phase of whole steps (OneCycleLR divides by zero): a constant rate
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    best, best_state, history, bad = -1.0, None, [], 0
    bar = tqdm(total=total, desc="step verifier", disable=not progress)
    for epoch in range(epochs):
        head.train()
        losses = []
        batches = [(False, rows) for rows in _group_batches(train, batch_size, rng)]
        if tokens is not None:  # token-only batches shuffled in among the policy-feature ones
            batches += [(True, rows) for rows in _group_batches(tokens, batch_size, rng)]
            rng.shuffle(batches)
        for only_tokens, rows in batches:
            if sched.last_epoch + 1 >= total:
                break
            idx = torch.tensor(rows)
            with torch.autocast(head.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                batch = packed.batch(rows) if only_tokens else _drop_features(batch_of(train, rows, head), feature_dropout)
                logits = head.raw_logits(batch)
            logits = logits.float()
            if only_tokens:
                y, g, w = tok_labels[idx], tok_groups[idx], tok_weight
            else:
                y, g, w = labels_all[idx], groups_all[idx], pos_weight
            losses.append(_train_step(head, opt, sched, logits, y, g, pos_weight=w, pair_weight=pair_weight))
            bar.update(1)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None}
        if val is not None and len(val):
            s = score_data(head, val)
            rec["val_sibling_auroc"] = sibling_auroc(s, val.labels, val.groups)["auroc"]
            rec["val_auroc"] = auroc(s, val.labels) if 0 < sum(val.labels) < len(val) else None
            metric = rec["val_sibling_auroc"] if rec["val_sibling_auroc"] is not None else (rec["val_auroc"] or 0.0)
            if metric > best + 1e-4:
                best, bad = metric, 0
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            else:
                bad += 1
        history.append(rec)
        bar.set_postfix({k: round(v, 4) for k, v in rec.items() if isinstance(v, float)})
        if val is not None and bad >= patience and select == "best":
            break
    bar.close()
    if best_state is not None and select == "best":
        head.load_state_dict(best_state)
    head.eval()
    return head, history


def fit_token_head(tokens: TokenSteps, *, hidden_size: int, steps: int, width: int = 96, layers: int = 2,
                   heads: int = 4, max_tokens: int = STEP_MAX_TOKENS, lr: float = 2e-3, weight_decay: float = 0.01,
                   groups_per_batch: int = 64, pair_weight: float = 1.0, seed: int = 0, fingerprint: str | None = None,
                   digit_ids: Sequence[int] = (), progress: bool = True) -> StepVerifier:
    """A token head: a ``StepVerifier`` that reads a step's tokens only (``reads_features=False``),
    trained for ``steps`` optimiser steps on token-only sibling groups (``verifier.token_steps``: a
    correct reference line beside its slipped-result versions; ``groups_per_batch`` whole groups a
    step, BCE plus the within-group ranking loss). It costs no policy forward, and nothing in its
    input lets it lean on how surprised the policy was: it learns the arithmetic or nothing. Beside
    the feature-reading head (``StepEnsemble``, weights from ``fit_mixture``) it ranks the results the
    policy finds unlikely — rewrites, rare facts — by their digits."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not len(tokens) or not any(tokens.labels) or all(tokens.labels):
        raise ValueError("the token head needs token steps, both right and wrong ones")
    torch.manual_seed(seed)
    rng = random.Random(f"token-head:{seed}")
    head = StepVerifier(hidden_size, width=width, layers=layers, heads=heads, max_tokens=max_tokens, dropout=0.0,
                        tokenizer_fingerprint=fingerprint, digit_ids=digit_ids, reads_features=False)
    packed = PackedTokens(tokens, hidden_size=hidden_size, max_tokens=max_tokens, digit_ids=head.digit_ids)
    y_all, g_all = torch.tensor(tokens.labels, dtype=torch.float32), torch.tensor(tokens.groups)
    pos = float(y_all.mean())
    pos_weight = torch.tensor((1 - pos) / pos)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(tokens.groups):
        members.setdefault(g, []).append(i)
    order = list(members)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05) if steps >= 40
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))  # one-cycle needs >= 2 warm-up steps
    head.train()
    done, losses = 0, []
    with tqdm(total=steps, desc="token head", disable=not progress) as bar:
        while done < steps:
            rng.shuffle(order)
            for j in range(0, len(order), groups_per_batch):
                rows = [r for g in order[j:j + groups_per_batch] for r in members[g]]
                idx = torch.tensor(rows)
                logits = head.raw_logits(packed.batch(rows)).float()
                losses.append(_train_step(head, opt, sched, logits, y_all[idx], g_all[idx], pos_weight=pos_weight,
                                          pair_weight=pair_weight))
                done += 1
                bar.update(1)
                if done % 50 == 0:
                    bar.set_postfix(loss=round(float(np.mean(losses[-50:])), 4))
                if done >= steps:
                    break
    head.eval()
    return head


def fit_mixture(ens: StepEnsemble, val: StepData, *, steps: int = 200) -> list[float]:
    """The ensemble's member weights and bias, fitted by LBFGS on the BCE of validation steps (the
    ensemble's Platt scale is folded into the weights and set to 1). A degenerate fit (no signal, a
    negative or non-finite weight) keeps the mean. Returns the weights."""
    if len(val) == 0 or not any(val.labels) or all(val.labels):
        return [float(w) for w in ens.weights]
    with torch.no_grad():
        ens.eval()
        z = torch.cat([ens.member_logits(batch_of(val, range(i, min(len(val), i + 512)), ens))
                       for i in range(0, len(val), 512)], dim=1)  # (K, N)
    y = torch.tensor(val.labels, dtype=torch.float32)
    w = ens.weights.detach().clone().requires_grad_(True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits((w[:, None] * z).sum(0) + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    if torch.isfinite(w).all() and math.isfinite(float(b)) and bool((w >= 0).all()) and float(w.sum()) > 0:
        ens.weights.copy_(w)
        ens.logit_scale.fill_(1.0)
        ens.logit_bias.fill_(float(b))
    return [float(x) for x in ens.weights]


def calibrate_steps(head: StepVerifier, val: StepData, *, steps: int = 200) -> tuple[float, float]:
    """Platt scaling on validation steps: fit ``scale · logit + bias`` by LBFGS on the BCE."""
    if len(val) == 0 or not any(val.labels) or all(val.labels):
        return 1.0, 0.0
    with torch.no_grad():
        head.eval()
        raw = torch.cat([head.raw_logits(batch_of(val, range(i, min(len(val), i + 512)), head))
                         for i in range(0, len(val), 512)])
    y = torch.tensor(val.labels, dtype=torch.float32)
    scale = torch.ones((), requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(raw * scale + bias, y)
        loss.backward()
        return loss

    opt.step(closure)
    s, b = float(scale.detach()), float(bias.detach())
    if not (math.isfinite(s) and math.isfinite(b)) or s <= 0:
        s, b = 1.0, 0.0  # a degenerate fit (no signal): keep the uncalibrated order
    head.logit_scale.fill_(s)
    head.logit_bias.fill_(b)
    return s, b


THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def calibrated_threshold(head: StepVerifier, val: StepData, *, max_false_prune: float = 0.005) -> float | None:
    """The lowest threshold of ``THRESHOLD_GRID`` that prunes at most ``max_false_prune`` of the right
    validation steps (None when no right step or none qualifies). A beam draws many children per
    round and one false prune can cost the only right path, so the bar is set on right steps; on the
    demo policy's 200 test problems τ = 0.9 (0% false prunes) kept the τ = 1 accuracy and τ = 0.5
    (4.9%) cost 15.5 points."""
    right = np.asarray(val.labels) == 0
    if not right.any():
        return None
    p = np.asarray(score_data(head, val))[right]
    for t in THRESHOLD_GRID:
        if float((p >= t).mean()) <= max_false_prune:
            return t
    return None


def _baselines(data: StepData, seed: int) -> dict[str, list[float]]:
    """Trivial rankers of P(error) beside the verifier: log-probs (lower = more likely wrong), the
    policy's own P(⟨b⟩), and random."""
    rng = random.Random(seed)
    return {
        "step logprob": [-x for x in data.logprobs],
        "mean token logprob": [-float(v.logprobs.mean()) for v in data.views],
        "path logprob": [-x for x in data.path_logprobs],
        "policy P(b)": list(data.p_policy),
        "random": [rng.random() for _ in range(len(data))],
    }


def evaluate_steps(head: StepVerifier, data: StepData, *, thresholds: Sequence[float] = (0.2, 0.35, 0.5, 0.65, 0.8),
                   seed: int = 0) -> dict:
    """Sibling AUROC and pooled AUROC of the verifier and of every baseline; prune rates per threshold."""
    scores = {"verifier": score_data(head, data), **_baselines(data, seed)}
    both = 0 < sum(data.labels) < len(data)
    out = {"n_steps": len(data), "n_wrong": int(sum(data.labels)),
           "kinds": {k: data.kinds.count(k) for k in sorted(set(data.kinds))}, "rankers": {}}
    for name, s in scores.items():
        sib = sibling_auroc(s, data.labels, data.groups)
        out["rankers"][name] = {"sibling_auroc": sib["auroc"], "pooled_auroc": auroc(s, data.labels) if both else None}
    out["sibling_pairs"], out["sibling_groups"] = sib["pairs"], sib["groups"]  # the same for every ranker
    v = np.asarray(scores["verifier"])
    y = np.asarray(data.labels)
    out["prune"] = [{"threshold": t, "false_prune_rate": float((v[y == 0] >= t).mean()) if (y == 0).any() else None,
                     "wrong_prune_rate": float((v[y == 1] >= t).mean()) if (y == 1).any() else None}
                    for t in thresholds]
    return out


def train_step_verifier(config, policy, *, progress: bool = True, side_labels: bool = False):
    """``rewind train-verifier --kind step``: own-sample labels → ``StepVerifier`` → held-out report.

    Writes ``out/steps.pt`` (the labelled steps, reused on a rerun), ``out/reference_steps.pt``,
    ``out/verifier/``, ``out/metrics.json``. Returns ``out``. With ``side_labels`` (``policy`` is
    ``config.policy`` as loaded from disk) and ``config.label_workers`` > 1 on a CPU, the reference
    steps are drawn by a second process while this one draws the own-step labels, one thread each
    (``policy.workers.side_job``): the labels one process draws at one thread, to the bit, in less
    wall time (at two threads a few matrix products round differently). The token head
    (``token_head_problems``), which reads no policy feature, trains in that second process too,
    after its reference steps (at one thread; trained here, at this process's threads, when no
    side job runs)."""

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    fingerprint = tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id)
    key = label_key(config, policy)
    problems = verifier_problems(config.task, config.num_problems, config.seed)
    pending = out / "reference_steps.pending.pt"
    # the held-out questions when every problem yields steps (the usual case): what a side job excludes
    guess = _held_out_questions(problems, [p.id for p in problems], config)
    data = StepData.load(out / "steps.pt", key=key)
    if data is None:
        draw_ref = config.reference_problems > 0 and not (out / "reference_steps.pt").exists()
        fit_tok = config.token_head_problems > 0 and _saved_token_head(out, _token_head_key(config, policy, fingerprint)) is None
        side = (side_labels and config.label_workers > 1 and (draw_ref or fit_tok) and can_run_side_jobs()
                and next(policy.model.parameters()).device.type == "cpu")
        job = (_side_job, (dataclasses.asdict(config), key, sorted(guess), str(pending), draw_ref, fit_tok, progress))
        with (side_job(*job) if side else nullcontext()) as future, torch.no_grad():
            data = collect_steps(policy, problems, width=config.beam_width, samples=config.beam_samples,
                                 temperature=config.search_temperature, seed=config.seed, max_depth=config.max_depth,
                                 max_step_tokens=config.max_step_tokens, rewrite=config.rewrite_labels,
                                 rewrite_trigger=CheckerOracle(policy.hidden_size), progress=progress)
        if future is not None and (error := _side_error(future)):
            warnings.warn(f"the side job failed ({error}); its reference steps and token head are made here instead",
                          stacklevel=2)
        data.save(out / "steps.pt", key=key)
        data = data.as_saved()  # what a resumed run reads back: the same verifier either way
    split = split_problems(data.problem_ids, test_share=config.test_share, val_share=config.val_share, seed=config.seed)
    parts = {name: data.of_problems(ids) for name, ids in split.items()}
    if config.reference_problems:  # never the held-out problems' questions
        held_out = _held_out_questions(problems, data.problem_ids, config)
        ref_key = reference_key(key, config)
        ref = StepData.load(out / "reference_steps.pt", key=ref_key)
        if ref is None and held_out == guess:
            ref = StepData.load(pending, key=ref_key)  # drawn by the side job with these exclusions
            if ref is not None:
                pending.replace(out / "reference_steps.pt")
        pending.unlink(missing_ok=True)
        if ref is None:
            ref = reference_steps(policy, reference_problems(config.task, config.reference_problems, config.seed,
                                                             exclude=held_out),
                                  slips=config.reference_slips, seed=config.seed, progress=progress)
            ref.save(out / "reference_steps.pt", key=ref_key)
            ref = ref.as_saved()
        parts["train"] = parts["train"].concat(ref)
    if config.twins:  # training problems only: validation and test stay the policy's own steps
        with torch.no_grad():
            parts["train"] = add_counterfactuals(policy, parts["train"], seed=config.seed, progress=progress)
    tokens = None
    if config.token_problems:  # the policy's training split: no held-out or validation question
        tokens = token_steps(policy.tokenizer, token_problems(config.task, config.token_problems, config.seed),
                             slips=config.reference_slips, seed=config.seed, kind=config.token_slips)
    members, histories, member_tests = [], [], []
    for k in range(config.heads):  # head k: seed + k (head 0 is the single-head recipe's, to the bit)
        head, history = fit_step_verifier(
            parts["train"], parts["val"], hidden_size=policy.hidden_size, width=config.step_width,
            layers=config.step_layers, lr=config.step_lr, dropout=config.step_dropout, weight_decay=config.weight_decay,
            batch_size=config.batch_size, epochs=config.epochs, patience=config.patience, pair_weight=config.pair_weight,
            feature_dropout=config.feature_dropout, seed=config.seed + k, fingerprint=fingerprint,
            select=config.step_select, digit_ids=digit_token_ids(policy.tokenizer), precision=config.precision,
            tokens=tokens, progress=progress)
        scale, bias = calibrate_steps(head, parts["val"])
        members.append(head)
        histories.append(history)
        if config.heads > 1:
            member_tests.append(evaluate_steps(head, parts["test"], seed=config.seed)["rankers"]["verifier"])
    if config.heads > 1:  # the mean of the members' calibrated logits, calibrated once more
        head, history = StepEnsemble(members), histories[0]
        scale, bias = calibrate_steps(head, parts["val"])
    mixture = None
    if config.token_head_problems:  # a token head beside the feature head(s), weighted on validation steps
        if config.heads > 1:
            member_tests.insert(0, evaluate_steps(head, parts["test"], seed=config.seed)["rankers"]["verifier"])
        else:
            member_tests.append(evaluate_steps(head, parts["test"], seed=config.seed)["rankers"]["verifier"])
        if members[0].max_tokens != STEP_MAX_TOKENS:  # the length the token head's key was computed for
            raise RuntimeError(f"the feature head reads {members[0].max_tokens} tokens, the token head "
                               f"{STEP_MAX_TOKENS}")
        token = _token_head(config, policy, fingerprint, out, progress=progress)
        token_test = evaluate_steps(token, parts["test"], seed=config.seed)["rankers"]["verifier"]
        head = StepEnsemble(members + [token])
        if config.heads > 1:  # the feature heads keep their mean's share: one weight for them, one for the token head
            head.weights.copy_(torch.tensor([1.0 / config.heads] * config.heads + [1.0]))
        weights = fit_mixture(head, parts["val"])
        scale, bias = 1.0, float(head.logit_bias)
        mixture = {"weights": weights, "token_head_test": token_test, "feature_head_test": member_tests[0]}
    head.default_threshold = calibrated_threshold(head, parts["val"])
    test = evaluate_steps(head, parts["test"], seed=config.seed)
    metrics = {
        "kind": "step", "policy": config.policy, "hidden_size": policy.hidden_size,
        "n_parameters": sum(p.numel() for p in head.parameters()),
        "n_policy_parameters": sum(p.numel() for p in policy.model.parameters()),
        "n_steps": {name: len(d) for name, d in parts.items()}, "n_token_steps": len(tokens) if tokens else 0,
        "n_wrong": {name: int(sum(d.labels)) for name, d in parts.items()},
        "n_problems": {name: len(ids) for name, ids in split.items()},
        "epochs_run": len(history), "calibration": {"logit_scale": scale, "logit_bias": bias},
        "default_threshold": head.default_threshold,
        "history": history, "test": test,
    }
    if config.heads > 1:  # each member's own held-out ranking, beside the ensemble's ("test")
        metrics.update(heads=config.heads, member_histories=histories, member_tests=member_tests)
    if mixture is not None:
        metrics["token_head"] = mixture
    head.save(out / "verifier", extra={"labels": "own-steps", "policy": config.policy})
    atomic_write_json(out / "metrics.json", metrics)
    if progress:
        print(step_summary(test))
    return out


def _token_head_key(config, policy, fingerprint: str) -> str:
    """The token head's key: it reads no policy feature, so only the tokenizer, the hidden size (the
    zero features' width), the task and its own knobs fix it."""
    return hashlib.sha256(json.dumps([fingerprint, policy.hidden_size, config.task, config.seed, config.reference_slips,
                                      config.token_head_problems, config.token_head_steps, config.step_width,
                                      config.step_layers, STEP_MAX_TOKENS]
                                     + ([config.token_slips] if config.token_slips != "digits" else [])  # older heads' key
                                     ).encode()).hexdigest()


def _saved_token_head(out: Path, key: str) -> StepVerifier | None:
    """``out/token_head`` when it was saved under ``key``, else None."""
    cfg_path = out / "token_head" / "verifier_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("key") == key:
            return StepVerifier.from_folder(out / "token_head", cfg)
    return None


def _token_head(config, policy, fingerprint: str, out: Path, *, progress: bool) -> StepVerifier:
    """The token head of ``config`` (``out/token_head``, reused when its key matches, trained and saved otherwise)."""
    key = _token_head_key(config, policy, fingerprint)
    saved = _saved_token_head(out, key)
    if saved is not None:
        return saved
    tokens = token_steps(policy.tokenizer, token_problems(config.task, config.token_head_problems, config.seed + 1),
                         slips=config.reference_slips, seed=config.seed + 1, kind=config.token_slips)
    head = fit_token_head(tokens, hidden_size=policy.hidden_size, steps=config.token_head_steps, width=config.step_width,
                          layers=config.step_layers, max_tokens=STEP_MAX_TOKENS, seed=config.seed,
                          fingerprint=fingerprint, digit_ids=digit_token_ids(policy.tokenizer), progress=progress)
    head.save(out / "token_head", extra={"key": key, "n_token_steps": len(tokens)})
    return head


def label_key(config, policy) -> str:
    """The own-step labels' cache key: what draws them, and the policy (its tokenizer and embeddings)."""
    fingerprint = tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id)
    emb = policy.model.get_input_embeddings().weight.detach()
    return hashlib.sha256(json.dumps({
        "fields": [config.task, config.num_problems, config.beam_width, config.beam_samples,
                   config.search_temperature, config.seed, config.max_depth, config.max_step_tokens]
                  + ([config.rewrite_labels] if config.rewrite_labels else []),  # 0: the key of older runs
        "policy": [fingerprint, float(emb.double().sum()), float(emb.double().abs().sum())]}).encode()).hexdigest()


def reference_key(key: str, config) -> str:
    """The reference steps' cache key: the own-step labels' key (their problems fix the exclusions)
    and the reference knobs."""
    return hashlib.sha256((key + json.dumps([config.reference_problems, config.reference_slips])).encode()).hexdigest()


def _held_out_questions(problems, ids, config) -> set[str]:
    """Questions of ``problems`` outside the training split of ``ids``: no reference step may use them."""
    split = split_problems(ids, test_share=config.test_share, val_share=config.val_share, seed=config.seed)
    return {p.question for p in problems if p.id not in split["train"]}


def _side_job(config: dict, key: str, exclude: list[str], path: str, draw_reference: bool, fit_token: bool,
              progress: bool) -> None:
    """The second process of ``train_step_verifier``: the reference steps, saved to ``path``, then the
    token head, saved to ``out/token_head``."""
    config = VerifierTrainConfig(**config)
    policy = load_frozen_policy(config.policy)
    if label_key(config, policy) != key:
        raise RuntimeError(f"the policy at {config.policy} is not the one the labels are drawn with")
    if draw_reference:
        ref = reference_steps(policy, reference_problems(config.task, config.reference_problems, config.seed,
                                                         exclude=set(exclude)),
                              slips=config.reference_slips, seed=config.seed, progress=progress)
        ref.save(path, key=reference_key(key, config))
    if fit_token:
        _token_head(config, policy, tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id), Path(config.out),
                    progress=progress)


def _side_error(future) -> str | None:
    try:
        future.result()
    except Exception as e:  # noqa: BLE001 - reported, then the steps are drawn here
        return f"{type(e).__name__}: {e}"
    return None


def step_summary(test: dict) -> str:
    """A Markdown table of the rankers' sibling and pooled AUROC on held-out steps."""
    lines = [f"held-out steps: {test['n_steps']} ({test['n_wrong']} wrong); sibling pairs: {test['sibling_pairs']} "
             f"in {test['sibling_groups']} groups", "",
             "| ranker of P(error) | sibling AUROC | pooled AUROC |", "|---|---|---|"]
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for name, r in test["rankers"].items():
        lines.append(f"| {name} | {fmt(r['sibling_auroc'])} | {fmt(r['pooled_auroc'])} |")
    return "\n".join(lines)
