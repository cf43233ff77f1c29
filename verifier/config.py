"""``VerifierTrainConfig``: one frozen dataclass whose fields are the ``rewind train-verifier`` flags.

Defaults are sized so that the built-in tiny policy's verifier trains in a minute or two on 2 CPU
cores (most of it spent sampling rollouts and MC completions, not training the head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from search.knobs import knob as _f

__all__ = ["LABEL_KINDS", "VerifierTrainConfig"]

LABEL_KINDS = ("injected", "rollouts", "mc", "mix")


@dataclass(frozen=True, kw_only=True)
class VerifierTrainConfig:
    """How to build verifier labels and train the head."""

    out: str = _f(None, "run folder: gets verifier/ (the head), metrics.json, config.json, features.pt, plots")
    policy: str = _f(None, "the frozen policy: a train-policy run folder, a policy folder, or 'tiny' (random init)")
    kind: Literal["step", "token"] = _f(
        "step", "'step': a small transformer over every position of a step, trained on the policy's own sibling "
        "steps (the checker labels them); 'token': the MLP on one hidden state, trained on --labels")
    beam_width: int = _f(4, "step: beam width W of the unpruned log-prob beam that draws the labelled steps (>= 1)")
    beam_samples: int = _f(4, "step: children per beam M of that beam (>= 1); the root draws W x M")
    search_temperature: float = _f(0.4, "step: sampling temperature of the labelled steps (> 0): the search's")
    rewrite_labels: int = _f(0, "step: rewrites (BeamConfig.rewrite) in the labelling beam, drawn where the step "
                             "checker finds every child of a beam wrong, so the labels hold the rewrites a search "
                             "with rewrites ranks (>= 0; 0: none)")
    step_width: int = _f(96, "step: model width of the step verifier (>= 1, a multiple of 4)")
    step_layers: int = _f(2, "step: transformer layers of the step verifier (>= 1)")
    step_lr: float = _f(1e-3, "step: peak AdamW learning rate (> 0)")
    max_depth: int = _f(12, "step: most steps per labelled solution (>= 1)")
    max_step_tokens: int = _f(96, "step: step-length cap of the labelled steps in tokens (>= 1)")
    twins: int = _f(0, "step: 1 adds to each one-annotation training step its twin with the result changed "
                    "(right <-> wrong; one frozen-policy forward each), 0 none (measured: held-out sibling "
                    "AUROC 0.715 with twins, 0.772 without)")
    reference_problems: int = _f(4000, "step: problems whose reference solutions add sibling groups of a correct step "
                                 "beside its slipped-result versions (one policy forward each; 0: none)")
    reference_slips: int = _f(3, "step: slipped versions per correct reference step (>= 1)")
    token_problems: int = _f(0, "step: problems of the policy's training split whose reference solutions add sibling "
                             "groups known by their tokens alone (a correct line beside --reference-slips slipped "
                             "versions; no policy forward, the features read as zero), so the verifier's token path "
                             "learns the arithmetic (>= 0; 0: none)")
    token_head_problems: int = _f(0, "step: problems of the policy's training split whose reference lines and their "
                                  "slipped-result versions train a token head, a second step verifier that reads the "
                                  "step's tokens only; the saved verifier is the two heads' mixture, weighted on "
                                  "validation steps (>= 0; 0: no token head)")
    token_slips: str = _f("facts", "step: the wrong versions of the token rows (--token-head-problems, --token-problems): "
                          "'facts' (a neighbouring fact's result, the result off by 1-10, digit slips: how the "
                          "policy's own steps are wrong) or 'digits' (the reference steps' digit slips, session 17's "
                          "token heads; a head learns to spot those slips, not the facts)")
    token_head_steps: int = _f(1500, "step: optimiser steps of the token head, 64 sibling groups each (>= 1)")
    label_workers: int = _f(2, "step: processes drawing the labels: 2 draws the reference steps in a second process "
                            "while this one draws the own-step labels, one thread each, on a CPU with >= 2 cores "
                            "(the labels 1 draws at one thread, in ~25% less time); 1 draws them one after the other")
    feature_dropout: float = _f(0.5, "step: share of training steps whose policy features (hidden states, "
                                "log-probs, entropies) are zeroed, so the token path must learn to check, in [0, 1)")
    step_dropout: float = _f(0.1, "step: dropout inside the step verifier (attention, feed-forward, head), in [0, 1); "
                             "0 saves about a quarter of an epoch but lost on validation (beam 31.5% / 32.0% "
                             "after 4 / 5 epochs against 33.0-37.0% for 0.1; experiments/results/verifier_budget)")
    heads: int = _f(1, "step: verifiers trained on the same labels, seeds seed, seed+1, ...; more than 1 saves an "
                    "ensemble that averages their calibrated logits (each head costs one more training; >= 1)")
    pair_weight: float = _f(1.0, "step: weight of the within-sibling ranking loss beside the BCE (>= 0)")
    step_select: Literal["best", "last"] = _f(
        "best", "step: keep the epoch of best validation sibling AUROC ('best', early stopping) or the final, "
        "annealed weights ('last')")
    precision: Literal["fp32", "bf16"] = _f(
        "fp32", "step: autocast of the step verifier's training forward (bf16: faster where the hardware has "
        "native bf16; the weights stay fp32 and scoring stays fp32)")
    labels: Literal["injected", "rollouts", "mc", "mix"] = _f(
        "injected", "label source: injected errors, the checker on the policy's own samples, MC completions, or all")
    task: Literal["builtin", "gsm8k"] = _f("builtin", "problems: the built-in generator (validation split) or GSM8K train")
    num_problems: int = _f(200, "problems to build labels from (>= 3), split by problem id into train/val/test")
    test_share: float = _f(0.25, "share of problems held out for the reported metrics, in (0, 1)")
    val_share: float = _f(0.15, "share of problems held out for early stopping, in (0, 1)")
    examples_per_problem: int = _f(2, "injected: examples drawn per problem (>= 1)")
    clean_share: float = _f(0.25, "injected: probability in [0, 1] that an example is the clean solution")
    samples_per_problem: int = _f(2, "rollouts/mc/mix: policy samples per problem (>= 1)")
    temperature: float = _f(1.0, "sampling temperature of rollouts and MC completions (> 0)")
    max_new_tokens: int = _f(200, "longest rollout / MC completion in tokens (>= 1)")
    mc_k: int = _f(4, "mc/mix: completions per step end (>= 1)")
    mc_sequences: int = _f(64, "mc/mix: rollouts whose step ends get MC labels (>= 1); unlocatable errors first")
    width: int = _f(256, "hidden width of the head's MLP (>= 1)")
    dropout: float = _f(0.0, "dropout in the head, in [0, 1)")
    lr: float = _f(2e-3, "AdamW learning rate (> 0)")
    weight_decay: float = _f(0.01, "AdamW weight decay (>= 0)")
    batch_size: int = _f(256, "labelled positions per optimiser step (>= 1)")
    epochs: int = _f(40, "most passes over the training positions (>= 1)")
    patience: int = _f(6, "stop after this many epochs without a better validation AUROC (>= 1)")
    feature_batch_size: int = _f(16, "sequences per policy forward when computing hidden states (>= 1)")
    seed: int = _f(0, "seed for problems, sampling, the split and the head's initialisation")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required: the run folder to write the verifier into")
        if not self.policy:
            raise ValueError("policy is required: a train-policy run folder, a policy folder, or 'tiny'")
        if self.kind not in ("step", "token"):
            raise ValueError(f"kind must be 'step' or 'token', got {self.kind!r}")
        if not isinstance(self.reference_problems, int) or self.reference_problems < 0:
            raise ValueError(f"reference_problems must be an int >= 0, got {self.reference_problems!r}")
        if not isinstance(self.heads, int) or self.heads < 1:
            raise ValueError(f"heads must be an int >= 1, got {self.heads!r}")
        for name in ("token_head_problems", "token_head_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "token_head_problems" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'token_head_problems' else 1}, got {v!r}")
        if self.token_slips not in ("facts", "digits"):
            raise ValueError(f"token_slips must be 'facts' or 'digits', got {self.token_slips!r}")
        if not isinstance(self.token_problems, int) or self.token_problems < 0:
            raise ValueError(f"token_problems must be an int >= 0, got {self.token_problems!r}")
        if not isinstance(self.reference_slips, int) or self.reference_slips < 1:
            raise ValueError(f"reference_slips must be an int >= 1, got {self.reference_slips!r}")
        if not 0.0 <= self.step_dropout < 1.0:
            raise ValueError(f"step_dropout must be in [0, 1), got {self.step_dropout!r}")
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {self.feature_dropout!r}")
        if self.label_workers not in (1, 2):
            raise ValueError(f"label_workers must be 1 or 2, got {self.label_workers!r}")
        if self.twins not in (0, 1):
            raise ValueError(f"twins must be 0 or 1, got {self.twins!r}")
        if isinstance(self.rewrite_labels, bool) or not isinstance(self.rewrite_labels, int) or self.rewrite_labels < 0:
            raise ValueError(f"rewrite_labels must be an integer >= 0, got {self.rewrite_labels!r}")
        for name in ("beam_width", "beam_samples", "step_layers", "max_depth", "max_step_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.step_width, int) or self.step_width < 4 or self.step_width % 4:
            raise ValueError(f"step_width must be a multiple of 4, >= 4, got {self.step_width!r}")
        if not self.search_temperature > 0 or not self.step_lr > 0 or not self.pair_weight >= 0:
            raise ValueError("search_temperature and step_lr must be > 0, pair_weight >= 0")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.step_select not in ("best", "last"):
            raise ValueError(f"step_select must be 'best' or 'last', got {self.step_select!r}")
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"labels must be one of {LABEL_KINDS}, got {self.labels!r}")
        if self.task not in ("builtin", "gsm8k"):
            raise ValueError(f"task must be 'builtin' or 'gsm8k', got {self.task!r}")
        for name, low in (("num_problems", 3), ("examples_per_problem", 1), ("samples_per_problem", 1),
                          ("max_new_tokens", 1), ("mc_k", 1), ("mc_sequences", 1), ("width", 1), ("batch_size", 1),
                          ("epochs", 1), ("patience", 1), ("feature_batch_size", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"{name} must be an int >= {low}, got {getattr(self, name)!r}")
        for name in ("test_share", "val_share"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.test_share + self.val_share >= 1.0:
            raise ValueError("test_share + val_share must leave problems to train on (< 1)")
        if not 0.0 <= self.clean_share <= 1.0:
            raise ValueError(f"clean_share must be in [0, 1], got {self.clean_share}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("temperature and lr must be > 0, weight_decay >= 0")
