"""The one flag generator: the fields of a frozen config dataclass become ``argparse`` flags, and
parsed flags become the config again, so a knob's name, type, choices, default and help are
written once — in the config (``search.knobs.knob``).

A field ``max_step_tokens: int = knob(96, "...")`` becomes ``--max-step-tokens N`` with that help
and ``(default: 96)``. Types: ``int``/``float``/``str`` (and ``X | None``), ``Literal[...]``
(choices), ``bool`` (``--x``/``--no-x``, or a plain switch with ``knob(..., flag=True)``) and
``tuple[T, ...]`` (``--x A B C``). ``knob(..., required=True)`` — or a field named ``out`` with
no default — must be given; ``knob(..., cli=False)`` has no flag.

It sits beside ``wiring.py`` (not in ``commands/``) because a benchmark script with its own
``main`` (``experiments.bench.train_throughput``) uses it too, and only commands may import
command modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

__all__ = ["add_config_flags", "config_fields", "config_from_args", "flag_name"]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_fields(cls: type, *, skip: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are flags."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in skip]


def _strip_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _kind(hint: Any) -> dict[str, Any]:
    """argparse keywords of a type hint (``None`` stripped)."""
    hint = _strip_none(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return {"type": item, "nargs": "+"}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"no flag for a field of type {hint!r}")


def add_config_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    unset: bool = False,
    owner: str | None = None,
) -> None:
    """One ``--flag`` per field of ``cls`` (minus ``skip``), help and default from the field.

    With ``unset=True`` every flag defaults to ``None`` (not given), so a command can pass on only
    the knobs the user set and leave the rest to the config's own defaults (``rewind solve``,
    whose defaults differ by strategy). ``owner`` names the config in the help (``[BeamConfig]``).
    """
    hints = typing.get_type_hints(cls)
    for f in config_fields(cls, skip=skip):
        help_ = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help: a "%" in it is text
        required = bool(f.metadata.get("required", f.name == "out" and f.default is None))
        tag = f" [{owner}]" if owner else ""
        if f.metadata.get("flag"):
            parser.add_argument(flag_name(f.name), dest=f.name, action="store_true",
                                default=None if unset else f.default, help=help_ + tag)
            continue
        kw = _kind(hints[f.name])
        default = None if (unset or required) else f.default
        if kw.get("nargs") and default is not None:
            default = list(default)
        shown = "" if required else f" (default: {f.default!r})" if unset or kw.get("action") else \
            f" (default: {f.default})"
        parser.add_argument(flag_name(f.name), dest=f.name, default=default, required=required,
                            help=help_ + shown + tag, **kw)


def config_from_args(args: argparse.Namespace, cls: type, *, unset: bool = False, **extra: Any) -> Any:
    """``cls`` from parsed flags (fields absent from ``args`` keep their defaults; ``unset``: so do
    fields left at ``None``), with ``extra`` fields set."""
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for f in config_fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if unset and value is None:
            continue
        if isinstance(value, list) and typing.get_origin(_strip_none(hints[f.name])) is tuple:
            value = tuple(value)
        kw[f.name] = value
    return cls(**{**kw, **extra})
