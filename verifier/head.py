"""``VerifierHead``: a small fp32 MLP from the policy's last hidden state to one logit of P(backtrack).

The head reads the hidden state that decoding already computed at a token (DESIGN §4), so
scoring a prefix costs no second forward of the policy: ``head.score(hidden [N, H]) -> [N]``.

A saved head is a folder with ``head.safetensors`` and ``verifier_config.json``; the config
names the policy it was trained on (hidden size and a fingerprint of its tokenizer) so that
``load_verifier`` refuses a head read against another policy's hidden states.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from policy.atomic import atomic_dir
from verifier.step_head import (
    STEP_ENSEMBLE_KIND,
    STEP_VERIFIER_KIND,
    VERIFIER_FORMAT_VERSION,
    StepEnsemble,
    StepVerifier,
)

__all__ = ["VERIFIER_FORMAT_VERSION", "VerifierHead", "load_verifier", "score", "tokenizer_fingerprint"]

_WEIGHTS = "head.safetensors"
_CONFIG = "verifier_config.json"


def tokenizer_fingerprint(tokenizer, backtrack_id: int | None) -> str:
    """A short stable hash of a tokenizer's vocabulary (token → id, added tokens included) and ⟨b⟩'s id.

    Two policies whose hidden states mean the same thing for the same ids share it; a head
    trained on one policy is refused on a policy with another fingerprint."""
    vocab = sorted(tokenizer.get_vocab().items())
    payload = json.dumps({"vocab": vocab, "backtrack_id": backtrack_id}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class VerifierHead(nn.Module):
    """LayerNorm → Linear(H, width) → GELU → Dropout → Linear(width, 1), in fp32, then a Platt
    scale and bias (identity until calibrated on held-out prefixes).

    ``forward(hidden [N, H]) -> logits [N]``; ``score(hidden [N, H]) -> P(backtrack) [N]`` in [0, 1].
    ``tokenizer_fingerprint`` (set by training) ties the head to the policy it reads.
    """

    def __init__(self, hidden_size: int, *, width: int = 256, dropout: float = 0.0,
                 tokenizer_fingerprint: str | None = None):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be an int >= 1, got {hidden_size!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1, got {width!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_size = hidden_size
        self.width = width
        self.dropout = dropout
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.net = nn.Sequential(
            nn.LayerNorm(hidden_size), nn.Linear(hidden_size, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, 1)
        ).float()
        # Platt calibration, set after training (``verifier.train.calibrate``): logit = scale · mlp + bias.
        self.register_buffer("logit_scale", torch.ones(()))
        self.register_buffer("logit_bias", torch.zeros(()))

    def _check(self, hidden: torch.Tensor, *, finite: bool = True) -> torch.Tensor:
        if not isinstance(hidden, torch.Tensor):
            raise ValueError(f"hidden must be a tensor [N, {self.hidden_size}], got {type(hidden).__name__}")
        if hidden.dim() == 1:
            hidden = hidden.unsqueeze(0)
        if hidden.dim() != 2 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden must be [N, {self.hidden_size}] (this head reads a policy of hidden size {self.hidden_size}), "
                f"got shape {tuple(hidden.shape)}: the hidden states come from another policy"
            )
        hidden = hidden.to(device=self.net[1].weight.device, dtype=torch.float32)
        if finite and not torch.isfinite(hidden).all():
            bad = int((~torch.isfinite(hidden)).any(-1).sum())
            raise ValueError(f"hidden states hold NaN/inf in {bad} of {hidden.shape[0]} rows: the policy's forward "
                             "produced non-finite features (check its weights and dtype)")
        return hidden

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[N]`` of P(backtrack) from hidden states ``[N, H]`` (any float dtype)."""
        return self.net(self._check(hidden)).squeeze(-1) * self.logit_scale + self.logit_bias

    @torch.no_grad()
    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """P(backtrack) ``[N]`` (fp32, in [0, 1]) for hidden states ``[N, H]``; no grad, eval mode."""
        was_training = self.training
        if was_training:
            self.eval()
        try:
            # The hot path of search and decoding hooks: check the N outputs for NaN/inf rather than
            # the N×H inputs (a non-finite feature always makes its row's LayerNorm output NaN), and
            # only then re-check the inputs to name the cause.
            x = hidden
            if not (isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[-1] == self.hidden_size
                    and x.dtype == torch.float32 and x.device == self.logit_scale.device):
                x = self._check(hidden, finite=False)  # validates and converts (the slow path)
            probs = torch.sigmoid(torch.addcmul(self.logit_bias, self.net(x).squeeze(-1), self.logit_scale))
            if not torch.isfinite(probs).all():
                self._check(hidden)
                raise ValueError("the verifier produced NaN scores from finite hidden states (corrupted head weights?)")
            return probs
        finally:
            if was_training:
                self.train()

    def config(self) -> dict:
        return {"format_version": VERIFIER_FORMAT_VERSION, "hidden_size": self.hidden_size, "width": self.width,
                "dropout": self.dropout, "tokenizer_fingerprint": self.tokenizer_fingerprint}

    def save(self, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
        """Write ``head.safetensors`` and ``verifier_config.json`` (plus ``extra`` keys) atomically."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / _WEIGHTS))
            (tmp / _CONFIG).write_text(json.dumps({**self.config(), **(extra or {})}, indent=2) + "\n")
        return path


def score(head: VerifierHead, hidden: torch.Tensor) -> torch.Tensor:
    """P(backtrack) ``[N]`` from hidden states ``[N, H]`` that decoding already computed."""
    return head.score(hidden)


def _read_config(path: Path) -> dict:
    cfg_path = path / _CONFIG
    if not path.is_dir() or not cfg_path.exists():
        raise FileNotFoundError(f"{path} is not a verifier folder: expected {_CONFIG} and {_WEIGHTS} "
                                "(made by `rewind train-verifier --out DIR`)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}); the verifier is corrupted") from e
    if cfg.get("format_version") != VERIFIER_FORMAT_VERSION:
        raise ValueError(f"{path} holds a verifier of format version {cfg.get('format_version')!r}; this Rewind "
                         f"reads version {VERIFIER_FORMAT_VERSION}. Re-train it with `rewind train-verifier`")
    return cfg


def load_verifier(path: str | os.PathLike, policy=None, *, device: str | torch.device | None = None) -> VerifierHead:
    """Load a saved verifier (its folder, a ``rewind train-verifier`` run folder, or a run folder whose
    ``run.json`` names it). With ``policy`` given, refuse (``ValueError``) a head trained on a policy
    with another hidden size or tokenizer: its scores would be meaningless."""
    path = Path(path).expanduser()
    if (path / "run.json").exists():  # a run folder (rewind demo): its manifest names the verifier
        try:
            entry = json.loads((path / "run.json").read_text()).get("verifier")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{path / 'run.json'} is corrupted ({e})") from e
        if not isinstance(entry, str):
            raise FileNotFoundError(f"the run {path} has no verifier (its run.json names none)")
        path = path / entry
    if (path / "verifier" / _CONFIG).exists():  # a train-verifier run folder
        path = path / "verifier"
    cfg = _read_config(path)
    if policy is not None:
        if int(cfg["hidden_size"]) != int(policy.hidden_size):
            raise ValueError(f"the verifier in {path} reads hidden states of size {cfg['hidden_size']} but the policy's "
                             f"are {policy.hidden_size}: it was trained for another policy")
        fp = tokenizer_fingerprint(policy.tokenizer, policy.backtrack_id)
        if cfg.get("tokenizer_fingerprint") not in (None, fp):
            raise ValueError(f"the verifier in {path} was trained for a policy with another tokenizer (fingerprint "
                             f"{cfg['tokenizer_fingerprint']} vs the policy's {fp}): train a verifier for this policy")
    if cfg.get("kind", "token") in (STEP_VERIFIER_KIND, STEP_ENSEMBLE_KIND):
        kind = StepEnsemble if cfg["kind"] == STEP_ENSEMBLE_KIND else StepVerifier
        head = kind.from_folder(path, cfg)
        if device is not None:
            head.to(device)
        return head
    head = VerifierHead(int(cfg["hidden_size"]), width=int(cfg["width"]), dropout=float(cfg.get("dropout", 0.0)),
                        tokenizer_fingerprint=cfg.get("tokenizer_fingerprint"))
    weights = path / _WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; the verifier folder is incomplete")
    head.load_state_dict(load_file(str(weights)))
    if device is not None:
        head.to(device)
    head.eval()
    return head
