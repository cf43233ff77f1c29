"""``train_verifier``: labels → cached hidden states (policy frozen) → the head → diagnostics.

Problems are split by id into train / val (early stopping on its AUROC) / test (the reported
metrics). The loss is BCE on the head's logit with per-row weights that give every (label source, class)
cell the same total weight, so both classes and all sources count whatever their error rates;
MC labels enter as soft targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from policy.atomic import atomic_write_json
from policy.data import inject_errors
from policy.data.problems import Problem
from policy.generate import newline_token_ids
from policy.model import Policy
from verifier.config import VerifierTrainConfig
from verifier.features import Features, compute_features, load_features, save_features
from verifier.frozen import load_frozen_policy
from verifier.head import VerifierHead, tokenizer_fingerprint
from verifier.labels import (
    LabelledSequence,
    labels_from_example,
    mc_labels,
    merge_mc,
    rollout_labels,
)
from verifier.metrics import auroc
from verifier.report import evaluate, summary_table, write_plots
from verifier.splits import split_problems, verifier_problems
from verifier.step_train import train_step_verifier

__all__ = ["build_labels", "calibrate", "fit_head", "load_frozen_policy", "split_problems", "train_verifier"]


def _problems(config: VerifierTrainConfig) -> list[Problem]:
    return verifier_problems(config.task, config.num_problems, config.seed)


def build_labels(policy: Policy, problems: Sequence[Problem], config: VerifierTrainConfig,
                 *, progress: bool = True) -> list[LabelledSequence]:
    """The labelled sequences of ``config.labels`` over ``problems`` (see ``verifier.labels``)."""
    tok, bt = policy.tokenizer, policy.backtrack_id
    if bt is None:
        raise ValueError("the verifier needs a policy with the backtrack token")
    seqs: list[LabelledSequence] = []
    if config.labels in ("injected", "mix"):
        newlines = newline_token_ids(tok)
        for p in tqdm(problems, desc="inject errors", disable=not progress):
            try:
                examples = inject_errors(p, tok, seed=config.seed, examples_per_problem=config.examples_per_problem,
                                         clean_share=config.clean_share)
            except ValueError:  # a reference solution the step checker rejects: no labels from it
                continue
            seqs += [labels_from_example(ex, bt, newlines) for ex in examples]
    if config.labels in ("rollouts", "mc", "mix"):
        rolled = rollout_labels(policy, problems, samples_per_problem=config.samples_per_problem,
                                temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                                seed=config.seed, progress=progress)
        if config.labels == "rollouts":
            return seqs + rolled
        # MC first where the checker could not locate an error (answer wrong, no wrong step seen).
        unlocated = [i for i, s in enumerate(rolled) if s.answer_wrong and 1.0 not in s.labels]
        chosen = sorted((unlocated + [i for i in range(len(rolled)) if i not in set(unlocated)])[: config.mc_sequences])
        by_id = {p.id: p for p in problems}
        mc = mc_labels(policy, [rolled[i] for i in chosen], by_id, k=config.mc_k, temperature=config.temperature,
                       max_new_tokens=config.max_new_tokens, seed=config.seed, progress=progress)
        if config.labels == "mc":
            return seqs + mc
        merged = dict(zip(chosen, mc))
        seqs += [merge_mc(s, merged[i]) if i in merged else s for i, s in enumerate(rolled)]
    return seqs


def _both_classes(labels: torch.Tensor, what: str) -> tuple[float, float]:
    if labels.numel() == 0:
        raise ValueError(f"the {what} label set is empty: no labelled prefix to train on")
    n_pos = float(labels.sum())  # soft labels count fractionally
    n_neg = float(labels.numel()) - n_pos
    hard_pos = int((labels >= 0.5).sum())
    if hard_pos == 0 or hard_pos == labels.numel():
        which = "negative (no error)" if hard_pos == 0 else "positive (error)"
        raise ValueError(f"the {what} labels are all one class: all {labels.numel()} labelled prefixes are {which}; "
                         "the verifier needs both (add injected errors, or sample more rollouts)")
    return n_pos, n_neg


def _row_weights(train: Features) -> torch.Tensor:
    """Per-row loss weights ``[N]`` that give every (label source, class) cell the same total weight,
    so a rare class (injected errors are ~1% of prefixes) and a small source count as much as the rest."""
    src = torch.tensor([sorted(set(train.sources)).index(s) for s in train.sources])[train.sequence]
    cell = src * 2 + (train.labels >= 0.5).long()
    counts = torch.bincount(cell, minlength=int(cell.max()) + 1).float()
    w = 1.0 / counts[cell]
    return w * (len(train) / w.sum())  # mean weight 1


def _val_auroc(head: VerifierHead, val: Features) -> float | None:
    """Mean over label sources of the held-out AUROC (sources whose labels hold one class are skipped)."""
    scores = head.score(val.hidden).numpy()
    values = []
    for source in sorted(set(val.sources)):
        rows = val.rows_of(source=source).numpy()
        y = (val.labels.numpy()[rows] >= 0.5)
        if 0 < y.sum() < y.size:
            values.append(auroc(scores[rows], y))
    return sum(values) / len(values) if values else None


def fit_head(train: Features, val: Features | None, *, width: int = 256, dropout: float = 0.0, lr: float = 2e-3,
             weight_decay: float = 0.01, batch_size: int = 256, epochs: int = 40, patience: int = 6, seed: int = 0,
             fingerprint: str | None = None, progress: bool = True) -> tuple[VerifierHead, list[dict]]:
    """Train a head on ``train`` (class- and source-balanced BCE, AdamW); keep the epoch with the best
    ``val`` AUROC (mean over sources; all epochs when no source of ``val`` has both classes).
    Returns the head (eval mode) and the per-epoch history."""
    _both_classes(train.labels, "training")
    if not torch.isfinite(train.hidden).all():
        raise ValueError("the training hidden states hold NaN/inf: the policy's forward produced non-finite features")
    weights = _row_weights(train)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = VerifierHead(int(train.hidden.shape[1]), width=width, dropout=dropout, tokenizer_fingerprint=fingerprint)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, bad, history = -1.0, None, 0, []
    bar = tqdm(range(epochs), desc="train verifier", disable=not progress)
    for epoch in bar:
        head.train()
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(train), batch_size):
            idx = perm[start:start + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                head(train.hidden[idx]), train.labels[idx], weight=weights[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        record = {"epoch": epoch, "train_loss": total / len(train)}
        val_auroc = _val_auroc(head, val) if val is not None and len(val) else None
        if val_auroc is not None:
            record["val_auroc"] = val_auroc
        history.append(record)
        bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
        score = val_auroc if val_auroc is not None else epoch  # no validation: the last epoch is the best
        if score > best:
            best, bad = score, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if val_auroc is not None and bad >= patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return head, history


@torch.enable_grad()
def calibrate(head: VerifierHead, val: Features, *, steps: int = 200) -> tuple[float, float]:
    """Platt scaling on held-out prefixes: fit ``logit_scale``/``logit_bias`` by unweighted BCE.

    The balanced training loss shifts the head's prior towards errors (a clean prefix would read
    P ≈ 0.5 where its true rate is ~1%); this undoes the shift without changing the ranking
    (the scale is kept positive). Skipped (identity) when ``val`` lacks a class."""
    y = (val.labels >= 0.5)
    if len(val) == 0 or not 0 < int(y.sum()) < len(val):
        return 1.0, 0.0
    with torch.no_grad():
        head.logit_scale.fill_(1.0)
        head.logit_bias.fill_(0.0)
        z = head.eval()(val.hidden)
    log_a, b = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.5, max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z * log_a.exp() + b, val.labels)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.logit_scale.fill_(float(log_a.exp()))
        head.logit_bias.fill_(float(b))
    return float(head.logit_scale), float(head.logit_bias)


def _feature_key(config: VerifierTrainConfig, policy: Policy) -> str:
    """What the cached features depend on: the label-building fields and the policy's identity."""
    skip = {"out", "width", "dropout", "lr", "weight_decay", "batch_size", "epochs", "patience", "test_share", "val_share"}
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
    emb = policy.model.get_input_embeddings().weight.detach()
    ident = {"fingerprint": tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id),
             "hidden": policy.hidden_size, "emb_sum": float(emb.double().sum()), "emb_abs": float(emb.double().abs().sum())}
    return hashlib.sha256(json.dumps({"fields": fields, "policy": ident}, sort_keys=True).encode()).hexdigest()


def train_verifier(config: VerifierTrainConfig, *, policy: Policy | None = None, progress: bool = True) -> Path:
    """Build labels, cache features, train the head, evaluate on held-out problems and write
    ``out/verifier/`` (head + config), ``out/metrics.json``, ``out/config.json``,
    ``out/features.pt`` and ``out/reliability_<source>.png``. Returns ``out``."""
    from_spec = policy is None  # the policy a side job loads from config.policy is this one
    policy = policy if policy is not None else load_frozen_policy(config.policy)
    policy.model.eval()
    if config.kind == "step":
        return train_step_verifier(config, policy, progress=progress, side_labels=from_spec)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    key = _feature_key(config, policy)
    feats = load_features(out / "features.pt", key=key)
    if feats is None:
        with torch.no_grad():
            seqs = build_labels(policy, _problems(config), config, progress=progress)
            feats = compute_features(policy, seqs, batch_size=config.feature_batch_size, progress=progress)
        save_features(feats, out / "features.pt", key=key)
    split = split_problems(feats.problem_ids, test_share=config.test_share, val_share=config.val_share, seed=config.seed)
    parts = {name: feats.select(feats.rows_of(problems=ids)) for name, ids in split.items()}
    fingerprint = tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id)
    head, history = fit_head(parts["train"], parts["val"], width=config.width, dropout=config.dropout, lr=config.lr,
                             weight_decay=config.weight_decay, batch_size=config.batch_size, epochs=config.epochs,
                             patience=config.patience, seed=config.seed, fingerprint=fingerprint, progress=progress)
    scale, bias = calibrate(head, parts["val"])
    test = evaluate(head, parts["test"])
    metrics = {
        "labels": config.labels, "policy": config.policy, "hidden_size": policy.hidden_size,
        "n_positions": {name: len(f) for name, f in parts.items()},
        "n_positive": {name: int((f.labels >= 0.5).sum()) for name, f in parts.items()},
        "n_problems": {name: len(ids) for name, ids in split.items()},
        "epochs_run": len(history), "best_val_auroc": max((h.get("val_auroc", -1) for h in history), default=None),
        "calibration": {"logit_scale": scale, "logit_bias": bias}, "history": history, "test": test,
    }
    head.save(out / "verifier", extra={"labels": config.labels, "policy": config.policy})
    atomic_write_json(out / "metrics.json", metrics)
    write_plots(test, out)
    if progress:
        print(summary_table(test))
    return out
