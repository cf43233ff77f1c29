"""A config knob: a dataclass field that carries its own help text, so the command line is
generated from the config (``experiments.flags``) and nothing is written twice.

It lives in ``search/`` because ``search/`` is the bottom of the package graph (DESIGN §6): it
imports neither ``policy/`` nor ``verifier/``, and all three packages and ``experiments/`` may
import it. It is plain ``dataclasses`` — no argparse, no torch.

    @dataclass(frozen=True, kw_only=True)
    class C:
        width: int = knob(4, "beams kept after each step, >= 1")
        threshold: float = knob_of(SearchConfig, "threshold")  # the same knob, defined once
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["knob", "knob_of"]


def knob(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - "help" is argparse's own word
    """A field with ``default`` and ``metadata={"help": help, **meta}``.

    ``meta`` keys the flag generator reads: ``flag=True`` (a bool switch, ``store_true``),
    ``required=True`` (the flag must be given), ``cli=False`` (no flag for this field).
    """
    if not isinstance(help, str) or not help:
        raise ValueError("a knob needs its help text")
    if isinstance(default, (list, dict, set)):
        raise ValueError("a knob's default must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def knob_of(cls: type, name: str, **meta: Any) -> Any:
    """The knob ``name`` of config class ``cls`` — same default, same help — for a config that
    passes it through (e.g. an evaluation's ``threshold`` is the search's)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise ValueError(f"{cls.__name__} has no field {name!r}")
    return dataclasses.field(default=f.default, metadata={**f.metadata, **meta, "knob_of": cls.__name__})
