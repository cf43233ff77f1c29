"""``StepVerifier``: reads a whole step — every alive token's hidden state, log-prob and entropy —
and predicts P(the step holds an error).

Why not one vector: on the built-in task most of the policy's errors are a wrong result inside
``<<a*b=c>>``. Whether ``c`` is right depends on the digits of ``a``, ``b`` and ``c`` at different
positions of the step, and a probe on the last hidden state of a 0.8M-parameter policy could not
recover it (sibling AUROC 0.53–0.56, issue 14). Here a small transformer attends over the step's
positions, which is enough to compare the written result with the operands.

Input per node (``search.interfaces.StepView``): ``hidden [T, H]``, ``logprobs [T]``,
``entropies [T]`` — all computed by decoding already (no second forward of the policy) —, the
step's token ids and the node's depth. Architecture::

    x_t = Linear(LayerNorm(h_t)) + Linear([lp_t, ent_t]) + pos_t + emb(id_t mod 4096) + place_t   # (T, d)
    x   = TransformerEncoder(x, 2 layers, pre-norm, key padding mask)    # (T, d)
    z   = [attention-pool(x), mean(x), min lp, mean lp, max ent, log T]  # (2d + 4,)
    logit = Linear(GELU(Linear(z)))                                      # ()

Then a Platt scale and bias (``calibrate``), identity until set. ``score_steps`` gives P = 1 to a
step whose calculator annotation is malformed (a form rule, not a learned score: issue 14 found
search exploiting a head that rated odd steps as error-free).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policy.atomic import atomic_dir
from policy.data.grading import check_steps

__all__ = ["STEP_ENSEMBLE_KIND", "STEP_VERIFIER_KIND", "VERIFIER_FORMAT_VERSION", "PackedSteps", "StepBatch",
           "StepEnsemble", "StepVerifier", "UniformDropout", "collate_steps", "digit_places", "digit_token_ids"]

VERIFIER_FORMAT_VERSION = 1  # of every saved verifier folder (``verifier.head`` reads it from here)
STEP_VERIFIER_KIND = "step"
STEP_ENSEMBLE_KIND = "step-ensemble"
TOKEN_BUCKETS = 4096
_WEIGHTS = "head.safetensors"
_CONFIG = "verifier_config.json"


def _malformed(text: str) -> bool:
    """True when ``text`` holds a calculator annotation that does not parse (``<<3*4=12`` or ``<<=>>``).
    Search must never prefer such a step: a learned score could rate its odd form as error-free."""
    if "<<" not in text and ">>" not in text:
        return False
    errors = check_steps(text).errors
    return bool(errors) and errors[0].kind == "malformed"


class StepBatch:
    """Padded steps: ``hidden [N, T, H]``, ``scalars [N, T, 2]`` (log-prob, entropy),
    ``mask [N, T]`` (True = a real token), ``depth [N]``, ``ids [N, T]`` (token ids, -1 unknown),
    ``place [N, T]`` (a digit token's place in its number counted from the right, 1..8; 0 otherwise)."""

    def __init__(self, hidden: torch.Tensor, scalars: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor,
                 ids: torch.Tensor | None = None, place: torch.Tensor | None = None):
        self.hidden, self.scalars, self.mask, self.depth = hidden, scalars, mask, depth
        self.ids = ids if ids is not None else torch.full(mask.shape, -1, dtype=torch.long)
        self.place = place if place is not None else torch.zeros(mask.shape, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def to(self, device: torch.device) -> StepBatch:
        return StepBatch(self.hidden.to(device), self.scalars.to(device), self.mask.to(device), self.depth.to(device),
                         self.ids.to(device), self.place.to(device))


MAX_PLACE = 8


def digit_places(ids: Sequence[int], digit_ids: frozenset[int]) -> list[int]:
    """For each token, its place in a run of digit tokens counted from the right (units = 1, tens
    = 2, ..., capped at ``MAX_PLACE``), 0 for a non-digit: the alignment that comparing a written
    result with its operands needs (the idea of Abacus embeddings, McLeish et al. 2024)."""
    out, run = [0] * len(ids), 0
    for j in range(len(ids) - 1, -1, -1):
        run = run + 1 if ids[j] in digit_ids else 0
        out[j] = min(run, MAX_PLACE)
    return out


def digit_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that decode to digits only (``"7"``, or ``"123"`` in a BPE vocabulary)."""
    vocab = tokenizer.get_vocab()
    out = []
    for piece, i in vocab.items():
        if any(c.isdigit() for c in piece):
            text = tokenizer.decode([i]).strip()
            if text and text.isdigit() and text.isascii():
                out.append(int(i))
    return sorted(out)


def collate_steps(hidden: Sequence[torch.Tensor], logprobs: Sequence[torch.Tensor], entropies: Sequence[torch.Tensor],
                  depth: Sequence[int], *, max_tokens: int, ids: Sequence[Sequence[int]] | None = None,
                  digit_ids: frozenset[int] = frozenset()) -> StepBatch:
    """Pad N steps into a ``StepBatch``; a step longer than ``max_tokens`` keeps its last tokens
    (the result and the end of the line). ``digit_ids`` mark digit tokens (``place``)."""
    if not hidden:
        raise ValueError("no steps to score")
    n = len(hidden)
    lens = [min(int(h.shape[0]), max_tokens) for h in hidden]
    if min(lens) < 1:
        raise ValueError("a step view has no token (T = 0); the engine sends at least one row per step")
    T, H = max(lens), int(hidden[0].shape[-1])
    out_h = torch.zeros(n, T, H)
    out_s = torch.zeros(n, T, 2)
    mask = torch.zeros(n, T, dtype=torch.bool)
    tok = torch.full((n, T), -1, dtype=torch.long)
    place = torch.zeros(n, T, dtype=torch.long)
    for i, (h, lp, ent, t) in enumerate(zip(hidden, logprobs, entropies, lens)):
        if ids is not None and len(ids[i]) == h.shape[0]:
            tail = list(ids[i])[-t:]
            tok[i, :t] = torch.as_tensor(tail, dtype=torch.long)
            if digit_ids:
                place[i, :t] = torch.as_tensor(digit_places(tail, digit_ids), dtype=torch.long)
        if h.dim() != 2 or h.shape[-1] != H:
            raise ValueError(f"step {i}: hidden must be [T, {H}], got {tuple(h.shape)}")
        out_h[i, :t] = h[-t:].float()
        out_s[i, :t, 0] = lp.reshape(-1)[-t:].float().clamp(min=-30.0)
        out_s[i, :t, 1] = ent.reshape(-1)[-t:].float()
        mask[i, :t] = True
    return StepBatch(out_h, out_s, mask, torch.as_tensor(list(depth), dtype=torch.float32), tok, place)


class UniformDropout(nn.Module):
    """Inverted dropout with ``nn.Dropout``'s distribution (each element kept with probability
    1 - p, kept ones scaled by 1 / (1 - p)), its mask drawn as ``uniform >= p``: on a CPU torch's
    Bernoulli sampler made ``nn.Dropout`` a fifth of the step verifier's training forward, and this
    draws the same mask law in about half the time. No parameters: state dicts are unchanged."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def flat_rows(lens: torch.Tensor, starts: torch.Tensor, rows: Sequence[int]):
    """For rows of a flat store (row i: ``lens[i]`` entries from ``starts[i]``): the row indices,
    the padding mask ``[N, T]`` and the flat index of every padded cell (0 where padded)."""
    r = torch.as_tensor(list(rows), dtype=torch.long)
    if len(r) == 0:
        raise ValueError("no steps to score")
    t = lens[r]
    ar = torch.arange(int(t.max()))
    mask = ar[None] < t[:, None]  # (N, T)
    return r, mask, torch.where(mask, starts[r][:, None] + ar[None], 0).reshape(-1)


class PackedSteps:
    """Many steps stored once in flat tensors, cut to what ``collate_steps`` keeps (the last
    ``max_tokens`` tokens; log-probs clamped at -30; ids and digit places of that tail), so that a
    batch is one gather instead of a Python loop over its rows. ``batch(rows)`` is equal to
    ``collate_steps`` on the same views (``tests/test_step_verifier.py``): training reads every step
    once per epoch, and the loop was about 6% of an epoch. Hidden states that fp16 holds exactly
    (labels as saved, ``StepData.as_saved``) are stored in fp16: half the copy, the same values."""

    @torch.autocast("cpu", enabled=False)  # built lazily inside a training step's autocast: plain dtypes here
    def __init__(self, views: Sequence, *, max_tokens: int, digit_ids: frozenset[int] = frozenset()):
        if not views:
            raise ValueError("no steps to pack")
        H = int(views[0].hidden.shape[-1])
        lens, hs, lps, ents, toks, places = [], [], [], [], [], []
        exact16 = True  # hidden states that survive fp16 unchanged (labels as saved) are stored at half the memory
        for i, v in enumerate(views):
            h = v.hidden
            if h.dim() != 2 or h.shape[-1] != H:
                raise ValueError(f"step {i}: hidden must be [T, {H}], got {tuple(h.shape)}")
            t = min(int(h.shape[0]), max_tokens)
            if t < 1:
                raise ValueError("a step view has no token (T = 0); the engine sends at least one row per step")
            ids = getattr(v, "ids", ())
            tail = list(ids)[-t:] if len(ids) == h.shape[0] else None
            lens.append(t)
            hs.append(h[-t:].float())
            if exact16:
                half = hs[-1].half()
                exact16 = bool(torch.equal(half.float(), hs[-1]))
                hs[-1] = half if exact16 else hs[-1]
            lps.append(v.logprobs.reshape(-1)[-t:].float().clamp(min=-30.0))
            ents.append(v.entropies.reshape(-1)[-t:].float())
            toks.append(torch.as_tensor(tail, dtype=torch.long) if tail is not None else torch.full((t,), -1))
            places.append(torch.as_tensor(digit_places(tail, digit_ids), dtype=torch.long) if tail is not None and digit_ids
                          else torch.zeros(t, dtype=torch.long))
        self.lens = torch.tensor(lens)
        self.starts = torch.cumsum(self.lens, 0) - self.lens
        if not exact16:
            hs = [h.float() for h in hs]
        self.hidden, self.logprobs, self.entropies = torch.cat(hs), torch.cat(lps), torch.cat(ents)
        self.ids, self.place = torch.cat(toks), torch.cat(places)
        self.depth = torch.tensor([float(v.depth) for v in views])

    def __len__(self) -> int:
        return len(self.lens)

    @torch.autocast("cpu", enabled=False)
    def batch(self, rows: Sequence[int]) -> StepBatch:
        r, mask, flat = flat_rows(self.lens, self.starts, rows)
        N, T = mask.shape

        def take(x: torch.Tensor) -> torch.Tensor:  # index_select: far faster than x[idx] on a CPU
            return x.index_select(0, flat).view(N, T, *x.shape[1:])

        scalars = torch.stack([torch.where(mask, take(self.logprobs), 0.0), torch.where(mask, take(self.entropies), 0.0)],
                              dim=-1)
        return StepBatch(torch.where(mask[..., None], take(self.hidden).float(), 0.0), scalars, mask, self.depth[r],
                         torch.where(mask, take(self.ids), -1), torch.where(mask, take(self.place), 0))


class StepVerifier(nn.Module):
    """P(step holds an error) from a step's per-token hidden states, log-probs and entropies.

    ``forward(batch: StepBatch) -> logits [N]``; ``score_steps(views) -> probabilities [N]``.
    """

    def __init__(self, hidden_size: int, *, width: int = 96, layers: int = 2, heads: int = 4,
                 max_tokens: int = 96, dropout: float = 0.1, tokenizer_fingerprint: str | None = None,
                 digit_ids: Sequence[int] = (), reads_features: bool = True):
        super().__init__()
        for name, v in (("hidden_size", hidden_size), ("width", width), ("layers", layers), ("heads", heads),
                        ("max_tokens", max_tokens)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_size, self.width, self.layers, self.heads = hidden_size, width, layers, heads
        self.max_tokens, self.dropout = max_tokens, dropout
        self.tokenizer_fingerprint = tokenizer_fingerprint
        # False: a token head (``verifier.token_steps.fit_token_head``) that reads the step's tokens only;
        # the policy features (hidden states, log-probs, entropies) are read as zero, as it was trained
        self.reads_features = bool(reads_features)
        self.in_norm = nn.LayerNorm(hidden_size)
        self.in_proj = nn.Linear(hidden_size, width)
        self.scalar_proj = nn.Linear(2, width)
        self.pos = nn.Embedding(max_tokens, width)
        # the step's own token ids, hashed into a bounded table (a real vocabulary is 50k+ ids); row 0 = unknown
        self.tok = nn.Embedding(TOKEN_BUCKETS + 1, width)
        self.digit_ids = frozenset(int(i) for i in digit_ids)
        # the pruning threshold search uses when the caller gives none (set by training from validation
        # steps: ``step_train.calibrated_threshold``); None: search's own default
        self.default_threshold: float | None = None
        self.place = nn.Embedding(MAX_PLACE + 1, width)  # a digit's place in its number (0: not a digit)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for enc in self.encoder.layers:  # the residual and feed-forward dropouts (attention's own stays torch's)
            enc.dropout, enc.dropout1, enc.dropout2 = UniformDropout(dropout), UniformDropout(dropout), UniformDropout(dropout)
        self.out_norm = nn.LayerNorm(width)
        self.pool_query = nn.Linear(width, 1)
        self.head = nn.Sequential(nn.Linear(2 * width + 4, width), nn.GELU(), UniformDropout(dropout), nn.Linear(width, 1))
        self.register_buffer("logit_scale", torch.ones(()))
        self.register_buffer("logit_bias", torch.zeros(()))
        self.float()

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def raw_logits(self, batch: StepBatch) -> torch.Tensor:
        """Uncalibrated logits ``[N]``."""
        b = batch.to(self.device)
        if not self.reads_features:  # exactly what it was trained on: the features of token-only rows are zero
            b = StepBatch(torch.zeros_like(b.hidden), torch.zeros_like(b.scalars), b.mask, b.depth, b.ids, b.place)
        N, T, _ = b.hidden.shape
        pos = torch.arange(T, device=self.device)
        tok = torch.where(b.ids >= 0, b.ids % TOKEN_BUCKETS + 1, torch.zeros_like(b.ids))  # (N, T)
        x = (self.in_proj(self.in_norm(b.hidden)) + self.scalar_proj(b.scalars) + self.pos(pos)[None]
             + self.tok(tok) + self.place(b.place))  # (N, T, d)
        x = self.out_norm(self.encoder(x, src_key_padding_mask=~b.mask))  # (N, T, d)
        m = b.mask.float()  # (N, T)
        attn = self.pool_query(x).squeeze(-1).masked_fill(~b.mask, float("-inf")).softmax(-1)  # (N, T)
        pooled = (attn[..., None] * x).sum(1)  # (N, d)
        mean = (m[..., None] * x).sum(1) / m.sum(1, keepdim=True)  # (N, d)
        lp, ent = b.scalars[..., 0], b.scalars[..., 1]
        stats = torch.stack([
            lp.masked_fill(~b.mask, 0.0).min(1).values,
            (lp * m).sum(1) / m.sum(1),
            ent.masked_fill(~b.mask, 0.0).max(1).values,
            torch.log(m.sum(1)),
        ], dim=-1)  # (N, 4)
        return self.head(torch.cat([pooled, mean, stats], dim=-1)).squeeze(-1)

    def forward(self, batch: StepBatch) -> torch.Tensor:
        """Calibrated logits ``[N]`` of P(step holds an error)."""
        return self.raw_logits(batch) * self.logit_scale + self.logit_bias

    def check_hidden(self, hidden: torch.Tensor) -> None:
        """Refuses a step's hidden states that are not ``[T, hidden_size]`` of this verifier's policy."""
        if hidden.dim() != 2 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"a step's hidden states must be [T, {self.hidden_size}] (this verifier reads a "
                             f"policy of hidden size {self.hidden_size}), got {tuple(hidden.shape)}")

    def batch_of(self, views: Sequence) -> StepBatch:
        """A ``StepBatch`` from ``search.interfaces.StepView`` objects (or anything with the same fields)."""
        for v in views:
            self.check_hidden(v.hidden)
        return collate_steps([v.hidden for v in views], [v.logprobs for v in views], [v.entropies for v in views],
                             [v.depth for v in views], max_tokens=self.max_tokens,
                             ids=[getattr(v, "ids", ()) for v in views], digit_ids=self.digit_ids)

    @torch.no_grad()
    def score_steps(self, views: Sequence) -> torch.Tensor:
        """P(step holds an error) ``[N]`` in [0, 1] for ``StepView`` objects; eval mode, no grad."""
        if len(views) == 0:
            return torch.zeros(0)
        was = self.training
        self.eval()
        try:
            probs = torch.sigmoid(self(self.batch_of(views))).float().cpu()
        finally:
            self.train(was)
        if not torch.isfinite(probs).all():
            raise ValueError("the step verifier produced NaN scores (non-finite hidden states or corrupted weights)")
        for i, v in enumerate(views):  # a step whose calculator annotation does not parse is wrong by its form
            if _malformed(getattr(v, "text", "")):
                probs[i] = 1.0
        return probs

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Refuses per-token scoring: this verifier reads whole steps (``score_steps``)."""
        raise TypeError("a StepVerifier scores whole steps: call score_steps(views); search does so by itself")

    # ---- persistence ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"format_version": VERIFIER_FORMAT_VERSION, "kind": STEP_VERIFIER_KIND, "hidden_size": self.hidden_size,
                "width": self.width, "layers": self.layers, "heads": self.heads, "max_tokens": self.max_tokens,
                "dropout": self.dropout, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "digit_ids": sorted(self.digit_ids), "default_threshold": self.default_threshold,
                "reads_features": self.reads_features}

    def save(self, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp / _WEIGHTS))
            (tmp / _CONFIG).write_text(json.dumps({**self.config(), **(extra or {})}, indent=2) + "\n")
        return path

    @classmethod
    def from_folder(cls, path: Path, cfg: dict) -> StepVerifier:
        head = cls(int(cfg["hidden_size"]), width=int(cfg["width"]), layers=int(cfg["layers"]), heads=int(cfg["heads"]),
                   max_tokens=int(cfg["max_tokens"]), dropout=float(cfg.get("dropout", 0.0)),
                   tokenizer_fingerprint=cfg.get("tokenizer_fingerprint"), digit_ids=cfg.get("digit_ids", ()),
                   reads_features=bool(cfg.get("reads_features", True)))
        weights = path / _WEIGHTS
        if not weights.exists():
            raise FileNotFoundError(f"{weights} is missing; the verifier folder is incomplete")
        state = load_file(str(weights))
        if "digit_ids" not in cfg:  # saved before digit places existed: the place table adds nothing
            state.setdefault("place.weight", torch.zeros_like(head.place.weight))
        head.load_state_dict(state)
        t = cfg.get("default_threshold")
        head.default_threshold = None if t is None else float(t)
        head.eval()
        return head


class StepEnsemble(StepVerifier):
    """K step verifiers read as one: the logit of P(error) is a weighted sum of the members'
    calibrated logits (``weights``; the mean unless set, e.g. by ``step_train.fit_mixture``), then the
    ensemble's own Platt scale and bias (``calibrate``). Two uses: heads of one recipe from different
    seeds (the mean), and a head that reads the policy's features beside a token head that reads the
    step's tokens only (``reads_features=False``; weights fitted on validation steps). Members must read the same policy (hidden size, tokenizer) and the same
    step window (``max_tokens``, digit ids): one ``StepBatch`` serves them all. Why: two heads of one
    recipe on one policy land several beam points apart (``experiments/results/verifier_budget``), and
    averaging draws cuts that variance where a single head is a lottery ticket.

    Saved as a folder whose ``verifier_config.json`` says ``kind: step-ensemble``, with the members'
    own verifier folders ``member-0/``, ``member-1/``, ... inside."""

    def __init__(self, members: Sequence[StepVerifier], weights: Sequence[float] | None = None):
        nn.Module.__init__(self)
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(isinstance(m, StepEnsemble) or not isinstance(m, StepVerifier) for m in members):
            raise TypeError("ensemble members must be single StepVerifier heads")
        first = members[0]
        sig = lambda m: (m.hidden_size, m.max_tokens, m.digit_ids, m.tokenizer_fingerprint)  # noqa: E731
        for k, m in enumerate(members[1:], 1):
            if sig(m) != sig(first):
                raise ValueError(f"ensemble member {k} reads another policy or step window than member 0 (hidden size, "
                                 "max_tokens, digit ids or tokenizer differ): train every member on the same policy")
        self.members = nn.ModuleList(members)
        self.hidden_size, self.max_tokens = first.hidden_size, first.max_tokens
        self.digit_ids, self.tokenizer_fingerprint = first.digit_ids, first.tokenizer_fingerprint
        self.default_threshold: float | None = None
        self.reads_features = any(m.reads_features for m in members)
        w = torch.full((len(members),), 1.0 / len(members)) if weights is None else torch.tensor(list(weights),
                                                                                                 dtype=torch.float32)
        if w.shape != (len(members),) or not torch.isfinite(w).all():
            raise ValueError(f"an ensemble of {len(members)} members needs {len(members)} finite weights, got {weights!r}")
        self.register_buffer("weights", w)
        self.register_buffer("logit_scale", torch.ones(()))
        self.register_buffer("logit_bias", torch.zeros(()))
        self.eval()

    def member_logits(self, batch: StepBatch) -> torch.Tensor:
        """The members' calibrated logits ``[K, N]``."""
        return torch.stack([m(batch) for m in self.members])

    def raw_logits(self, batch: StepBatch) -> torch.Tensor:
        """The weighted sum of the members' calibrated logits ``[N]``."""
        return (self.weights[:, None] * self.member_logits(batch)).sum(0)

    def config(self) -> dict:
        return {"format_version": VERIFIER_FORMAT_VERSION, "kind": STEP_ENSEMBLE_KIND, "hidden_size": self.hidden_size,
                "max_tokens": self.max_tokens, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "digit_ids": sorted(self.digit_ids), "members": len(self.members),
                "weights": [round(float(w), 6) for w in self.weights], "default_threshold": self.default_threshold}

    def save(self, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
        path = Path(path)
        with atomic_dir(path) as tmp:
            for k, m in enumerate(self.members):
                m.save(tmp / f"member-{k}")
            save_file({"logit_scale": self.logit_scale.detach().cpu().contiguous(),
                       "logit_bias": self.logit_bias.detach().cpu().contiguous(),
                       "weights": self.weights.detach().cpu().contiguous()}, str(tmp / _WEIGHTS))
            (tmp / _CONFIG).write_text(json.dumps({**self.config(), **(extra or {})}, indent=2) + "\n")
        return path

    @classmethod
    def from_folder(cls, path: Path, cfg: dict) -> StepEnsemble:
        k = cfg.get("members")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"{path / _CONFIG} names no members (got {k!r}); the ensemble is corrupted")
        members = []
        for i in range(k):
            sub = path / f"member-{i}"
            if not (sub / _CONFIG).exists():
                raise FileNotFoundError(f"{sub} is missing; the ensemble folder is incomplete")
            sub_cfg = json.loads((sub / _CONFIG).read_text())
            if sub_cfg.get("kind") != STEP_VERIFIER_KIND:
                raise ValueError(f"{sub} is not a step verifier (kind {sub_cfg.get('kind')!r})")
            members.append(StepVerifier.from_folder(sub, sub_cfg))
        ens = cls(members)
        weights = path / _WEIGHTS
        if not weights.exists():
            raise FileNotFoundError(f"{weights} is missing; the verifier folder is incomplete")
        own = load_file(str(weights))
        if not {"logit_scale", "logit_bias"} <= set(own) <= {"logit_scale", "logit_bias", "weights"}:
            raise ValueError(f"{weights} holds {sorted(own)}, not the ensemble's logit_scale, logit_bias and weights")
        if "weights" in own:  # saved before weights existed: the mean
            if own["weights"].shape != (k,):
                raise ValueError(f"{weights} holds {tuple(own['weights'].shape)} weights for {k} members")
            ens.weights.copy_(own["weights"])
        ens.logit_scale.copy_(own["logit_scale"])
        ens.logit_bias.copy_(own["logit_bias"])
        t = cfg.get("default_threshold")
        ens.default_threshold = None if t is None else float(t)
        ens.eval()
        return ens
