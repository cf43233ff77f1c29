"""Search configs: one frozen, keyword-only dataclass per strategy, validated without I/O.

Every field is a ``search.knobs.knob`` carrying its help text, so ``rewind solve`` (and every
command that searches) builds its flags from these classes instead of writing them twice. Sweeps
use ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from search.knobs import knob as _f

__all__ = [
    "BeamConfig",
    "BestOfNConfig",
    "CONFIGS",
    "GreedyConfig",
    "MCTSConfig",
    "SearchConfig",
    "make_config",
    "parse_knobs",
]


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Knobs shared by every strategy."""

    threshold: float = _f(0.5, "prune a node whose P(backtrack) >= threshold, in [0, 1]; 1 prunes nothing")
    seed: int = _f(0, "run seed; a node's sample depends only on it and the node's path")
    temperature: float = _f(0.4, "sampling temperature of steps, >= 0 (0 = greedy); 0.4 measured best of {0.2, 0.4, 0.7} on the demo policy")
    top_p: float = _f(1.0, "nucleus sampling mass, in (0, 1]")
    max_step_tokens: int = _f(96, "a step is cut after this many tokens, >= 1, unless a ⟨b⟩-run is under way: "
                              "the run ends first, so a step may pass it by the run's length")
    max_depth: int = _f(24, "most steps in a solution, >= 1; deeper nodes end without an answer")
    max_nodes: int = _f(4096, "node budget per problem, >= 1; past it the answer is None")
    max_tokens: int = _f(200_000, "generated-token budget per problem, >= 1; past it the answer is None")
    time_limit_s: float | None = _f(None, "wall-clock budget per problem in seconds (None = none)")
    max_kv_bytes: int | None = _f(None, "live KV-cache budget per problem in bytes (None = none); past it the answer is None")
    max_question_chars: int = _f(4000, "longest question accepted, in characters")
    share_kv: bool = _f(True, "children extend the parent's KV cache; False re-encodes every path")
    backtrack_bias: float = _f(0.0, "added to the ⟨b⟩ logit when a step's tokens are chosen (not to log-probs); "
                               "> 0 rewinds more often, < 0 less")
    max_backtracks_per_step: int = _f(16, "most ⟨b⟩ within one step, >= 0; past it ⟨b⟩ is forbidden in the step")

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"{type(self).__name__}.seed must be an integer, got {self.seed!r}")
        for name in ("temperature", "top_p") + (("time_limit_s",) if self.time_limit_s is not None else ()):
            _number(self, name)
        if not isinstance(self.share_kv, bool):
            raise ValueError(f"share_kv must be True or False, got {self.share_kv!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("max_step_tokens", "max_depth", "max_nodes", "max_tokens", "max_question_chars"):
            _at_least(self, name, 1)
        if self.time_limit_s is not None and self.time_limit_s < 0:
            raise ValueError(f"time_limit_s must be >= 0 or None, got {self.time_limit_s}")
        if self.max_kv_bytes is not None:
            _at_least(self, "max_kv_bytes", 1)
        _number(self, "backtrack_bias")
        _at_least(self, "max_backtracks_per_step", 0)

    def engine_options(self) -> dict[str, Any]:
        """What the policy's ``engine(...)`` takes from this config."""
        return {"share_kv": self.share_kv, "backtrack_bias": float(self.backtrack_bias),
                "max_backtracks_per_step": self.max_backtracks_per_step}

    @property
    def strategy(self) -> str:
        return _STRATEGY_OF[type(self)]

    def prunes(self, p_backtrack: float) -> bool:
        """The pruning rule: prune iff ``p >= threshold``, except that threshold 1 prunes nothing."""
        return self.threshold < 1.0 and p_backtrack >= self.threshold

    @property
    def keeps_pruned(self) -> bool:
        """Whether a round's pruned nodes keep their KV until the strategy has seen the round."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **dataclasses.asdict(self)}


@dataclass(frozen=True, kw_only=True)
class GreedyConfig(SearchConfig):
    """Rewind decoding: temperature-0 steps; a step scored >= threshold is dropped and redrawn."""

    retries: int = _f(3, "redraws of a rejected or pruned step from the same node, >= 0")
    retry_temperature: float = _f(0.7, "temperature of the redraws, > 0")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "retries", 0)
        _number(self, "retry_temperature")
        if self.retry_temperature <= 0:
            raise ValueError(f"retry_temperature must be > 0, got {self.retry_temperature}")


@dataclass(frozen=True, kw_only=True)
class BestOfNConfig(SearchConfig):
    """N independent full samples, then a vote over their final answers."""

    n: int = _f(8, "independent samples, >= 1")
    vote: Literal["majority", "weighted"] = _f("weighted", "'majority' or 'weighted' (by 1 - P(backtrack))")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "n", 1)
        _one_of(self, "vote", ("majority", "weighted"))


@dataclass(frozen=True, kw_only=True)
class BeamConfig(SearchConfig):
    """Step-level beam search (Snell et al. 2024 §5: width W, M samples per beam)."""

    width: int = _f(4, "beams kept after each step (W), >= 1")
    samples: int = _f(4, "children drawn per beam (M), >= 1")
    rank: Literal["verifier", "logprob"] = _f(
        "verifier", "keep children by lowest P(backtrack) ('verifier') or highest path log-prob ('logprob'); with no verifier, log-prob")
    aggregate: Literal["last", "max", "prod"] = _f(
        "prod", "a path's verifier score from its steps' P(error): the last step's, the worst ('max'), or "
        "1 - prod(1 - p) ('prod'); measured in `rewind diagnose`")
    root_samples: int | None = _f(None, "children drawn at the root, >= 1 (None: width x samples)")
    early_stop: bool = _f(True, "stop once a finished answer's path score beats every open beam's: exact for "
                          "aggregate max/prod (a path's score never improves as it grows), off for last")
    distinct: bool = _f(False, "keep only one of open siblings whose alive steps are the same tokens, so the W "
                        "beams are W different paths (a duplicate's children would come from the same "
                        "distribution); fewer than W distinct survivors means fewer children next round")
    keep_last: bool = _f(False, "when pruning leaves a round with no open child and no answer has been found, the "
                         "pruned child of the best path stays: pruning drops alternatives, it does not end a "
                         "search that has nothing else (off: such a search ends with reason 'all_pruned')")
    accept: float | None = _f(None, "lazy siblings: each beam draws its children one at a time and stops once one "
                              "scores P(error) < accept (the root: once W do), up to M (W x M): the siblings a "
                              "confident step would have had are never drawn; None draws all of them at once")
    rewrite: int = _f(0, "rewrites: when every child of a beam scores P(error) >= rewrite_at, draw this many more "
                      "children that keep the best child's step up to its least likely token and choose that token "
                      "again, never the same one (hard backtracking into the step; >= 0, 0: none)")
    rewrite_at: float = _f(0.5, "P(error) at which every child of a beam counts as wrong and rewrites are drawn, "
                           "in (0, 1]")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "width", 1)
        _at_least(self, "samples", 1)
        _at_least(self, "rewrite", 0)
        if isinstance(self.rewrite_at, bool) or not isinstance(self.rewrite_at, (int, float)) \
                or not 0 < self.rewrite_at <= 1:
            raise ValueError(f"rewrite_at must be a number in (0, 1], got {self.rewrite_at!r}")
        _one_of(self, "rank", ("verifier", "logprob"))
        _one_of(self, "aggregate", ("last", "max", "prod"))
        if self.root_samples is not None:
            _at_least(self, "root_samples", 1)
        for name in ("distinct", "keep_last", "early_stop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.accept is not None:
            if isinstance(self.accept, bool) or not isinstance(self.accept, (int, float)) or not 0 < self.accept <= 1:
                raise ValueError(f"accept must be a number in (0, 1] or None, got {self.accept!r}")
            if self.keep_last:
                raise ValueError("accept (lazy siblings) and keep_last do not combine: a round of several draws "
                                 "frees its pruned children between them")

    @property
    def keeps_pruned(self) -> bool:
        return self.keep_last and self.threshold < 1.0


@dataclass(frozen=True, kw_only=True)
class MCTSConfig(SearchConfig):
    """PUCT tree search (Silver et al. 2017): prior from step log-probs, value 1 - P(backtrack)."""

    simulations: int = _f(32, "selection-expansion-backup rounds (N), >= 1")
    children: int = _f(4, "children drawn per expansion (K), >= 1")
    c_puct: float = _f(1.25, "exploration constant of PUCT, >= 0")
    answer: Literal["visits", "weighted"] = _f(
        "visits", "final answer by terminal visit counts ('visits') or by summed value ('weighted')")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "simulations", 1)
        _at_least(self, "children", 1)
        _number(self, "c_puct")
        if self.c_puct < 0:
            raise ValueError(f"c_puct must be >= 0, got {self.c_puct}")
        _one_of(self, "answer", ("visits", "weighted"))


CONFIGS: dict[str, type[SearchConfig]] = {
    "greedy": GreedyConfig,
    "best_of_n": BestOfNConfig,
    "beam": BeamConfig,
    "mcts": MCTSConfig,
}
_STRATEGY_OF = {cls: name for name, cls in CONFIGS.items()}


def make_config(
    strategy: str | None = None,
    config: SearchConfig | None = None,
    threshold: float | None = None,
    **knobs: Any,
) -> SearchConfig:
    """The config of a run: ``config`` (or the strategy's defaults) with ``threshold`` and ``knobs`` set.

    Raises ``ValueError`` for an unknown strategy, a config of another strategy, unknown knobs
    or out-of-range values — before any model work.
    """
    if config is not None and not isinstance(config, SearchConfig):
        raise ValueError(f"config must be one of {sorted(c.__name__ for c in CONFIGS.values())}, "
                         f"got {type(config).__name__}")
    if strategy is None:
        strategy = config.strategy if config is not None else "beam"
    if strategy not in CONFIGS:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(CONFIGS)}")
    cls = CONFIGS[strategy]
    if config is not None and type(config) is not cls:
        raise ValueError(f"strategy {strategy!r} needs a {cls.__name__}, got a {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(knobs) - names)
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r} for strategy {strategy!r}; its knobs are {sorted(names)}")
    if threshold is not None:
        knobs["threshold"] = threshold
    return dataclasses.replace(config, **knobs) if config is not None else cls(**knobs)


def parse_knobs(text: str) -> dict[str, Any]:
    """``"width=4,rank=logprob"`` → ``{"width": 4, "rank": "logprob"}`` (values read as JSON when they
    parse): search knobs given as one string, checked later by ``make_config``."""
    knobs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a knob is KEY=VALUE, got {part!r}")
        try:
            knobs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            knobs[key.strip()] = value.strip()
    return knobs


def _at_least(cfg: SearchConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{type(cfg).__name__}.{name} must be an integer >= {low}, got {value!r}")


def _number(cfg: SearchConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{type(cfg).__name__}.{name} must be a number, got {value!r}")


def _one_of(cfg: SearchConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{type(cfg).__name__}.{name} must be one of {choices}, got {getattr(cfg, name)!r}")
