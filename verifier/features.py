"""Hidden states of labelled sequences, computed once with the policy frozen and cached to a file.

Each sequence runs through the policy in one forward with the hard layout (``cache_layout``):
token t attends to exactly the tokens alive in the decoding cache when t is fed, at the same
position id, so the last-layer hidden state of t equals the one decoding computes (the layout
equivalence of DESIGN §1). The same forward gives the policy's own P(⟨b⟩) at t — the baseline.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from policy.atomic import public_mode
from policy.layout import cache_layout, layout_to_4d_mask
from policy.model import Policy
from verifier.labels import IGNORE, LabelledSequence

__all__ = ["Features", "compute_features", "load_features", "save_features", "sequence_hidden"]


@dataclass(frozen=True)
class Features:
    """Labelled positions of many sequences, flattened to N rows.

    ``hidden [N, H]`` fp32 last-layer states; ``labels [N]`` in [0, 1]; ``p_backtrack [N]`` the
    policy's softmax P(⟨b⟩) at the same position; ``sequence [N]`` index into ``problem_ids`` /
    ``sources``; ``position [N]`` raw token index in its sequence; ``step_end [N]`` bool.
    """

    hidden: torch.Tensor
    labels: torch.Tensor
    p_backtrack: torch.Tensor
    sequence: torch.Tensor
    position: torch.Tensor
    step_end: torch.Tensor
    problem_ids: tuple[str, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, rows: torch.Tensor) -> Features:
        """The rows ``rows`` (a bool mask ``[N]`` or an index tensor)."""
        return Features(self.hidden[rows], self.labels[rows], self.p_backtrack[rows], self.sequence[rows],
                        self.position[rows], self.step_end[rows], self.problem_ids, self.sources)

    def rows_of(self, *, source: str | None = None, problems: set[str] | None = None) -> torch.Tensor:
        """Bool mask ``[N]`` of rows whose sequence has ``source`` and a problem id in ``problems``."""
        keep = torch.ones(len(self.sources), dtype=torch.bool)
        if source is not None:
            keep &= torch.tensor([s == source for s in self.sources], dtype=torch.bool)
        if problems is not None:
            keep &= torch.tensor([p in problems for p in self.problem_ids], dtype=torch.bool)
        return keep[self.sequence]


@torch.no_grad()
def sequence_hidden(policy: Policy, sequences: Sequence[tuple[Sequence[int], int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One padded hard-layout forward over ``sequences`` (``(ids, prompt_len)`` each).

    Returns per sequence ``(hidden [L, H] fp32, p_backtrack [L] fp32)``.
    """
    bt = policy.backtrack_id
    if bt is None:
        raise ValueError("verifier features need a policy with the backtrack token")
    model = policy.model
    dtype = next(model.parameters()).dtype
    B, L = len(sequences), max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((B, L), int(policy.tokenizer.pad_token_id), dtype=torch.long)
    allowed = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)  # padding rows see themselves only
    position_ids = torch.zeros(B, L, dtype=torch.long)
    for b, (ids, prompt_len) in enumerate(sequences):
        n = len(ids)
        lay = cache_layout(list(ids), bt, prompt_len=prompt_len)
        input_ids[b, :n] = torch.tensor(list(ids), dtype=torch.long)
        allowed[b, :n, :n] = lay.attention
        position_ids[b, :n] = lay.position_ids
    dev = policy.device
    out = model(input_ids=input_ids.to(dev), attention_mask=layout_to_4d_mask(allowed, dtype).to(dev),
                position_ids=position_ids.to(dev), output_hidden_states=True)
    hidden = out.hidden_states[-1].float().cpu()  # (B, L, H)
    p_b = out.logits.float().softmax(-1)[..., bt].cpu()  # (B, L)
    return [(hidden[b, : len(ids)], p_b[b, : len(ids)]) for b, (ids, _) in enumerate(sequences)]


def compute_features(policy: Policy, sequences: Sequence[LabelledSequence], *, batch_size: int = 16,
                     progress: bool = True) -> Features:
    """Hidden states and baseline P(⟨b⟩) at every labelled position of ``sequences`` (policy frozen)."""
    if not sequences:
        raise ValueError("no labelled sequences to compute features for: the label set is empty")
    was_training = policy.model.training
    policy.model.eval()
    hs, ys, ps, seq, pos, ends = [], [], [], [], [], []
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))  # similar lengths per batch
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="verifier features", disable=not progress):
            chunk = order[start:start + batch_size]
            results = sequence_hidden(policy, [(sequences[i].ids, sequences[i].prompt_len) for i in chunk])
            for i, (h, p) in zip(chunk, results):
                s = sequences[i]
                idx = torch.tensor([t for t, v in enumerate(s.labels) if v != IGNORE], dtype=torch.long)
                if idx.numel() == 0:
                    continue
                hs.append(h[idx])
                ps.append(p[idx])
                ys.append(torch.tensor(s.labels, dtype=torch.float32)[idx])
                seq.append(torch.full((idx.numel(),), i, dtype=torch.long))
                pos.append(idx)
                ends.append(torch.tensor(s.step_end, dtype=torch.bool)[idx])
    finally:
        policy.model.train(was_training)
    if not hs:
        raise ValueError(f"none of the {len(sequences)} sequences has a labelled position: the label set is empty")
    return Features(torch.cat(hs), torch.cat(ys), torch.cat(ps), torch.cat(seq), torch.cat(pos), torch.cat(ends),
                    tuple(s.problem_id for s in sequences), tuple(s.source for s in sequences))


def save_features(features: Features, path: str | os.PathLike, *, key: str) -> Path:
    """Write ``features`` to ``path`` (atomically) under a cache ``key`` describing how they were made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    public_mode(tmp)
    os.close(fd)
    try:
        torch.save({"key": key, **{f: getattr(features, f) for f in Features.__dataclass_fields__}}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_features(path: str | os.PathLike, *, key: str) -> Features | None:
    """Cached features of ``path`` if they were made under ``key``, else None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file: recompute
        return None
    if data.get("key") != key:
        return None
    return Features(**{f: (tuple(data[f]) if f in ("problem_ids", "sources") else data[f])
                       for f in Features.__dataclass_fields__})
