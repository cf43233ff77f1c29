"""The policy and verifier of ``solve()`` when it is given none, or given paths.

``search`` imports neither ``policy`` nor ``verifier`` (DESIGN §6): the composition root
(``experiments.wiring``) is found through the ``rewind.wiring`` entry points — ``default``, a
function returning ``(policy, verifier)`` of the default run (``rewind demo``, or ``REWIND_RUN``),
and ``load``, the same for a source ``solve(policy="runs/demo")`` names (a run folder, a policy or
adapter folder, a ``.gguf`` file, a hub name) and a verifier folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

__all__ = ["NO_DEFAULT_RUN", "load_default", "load_parts"]

NO_DEFAULT_RUN = "no default run to search with: run `rewind demo` first, or set REWIND_RUN=<run folder>"


def _wiring(name: str) -> Callable[..., tuple[Any, Any]]:
    found = [ep for ep in entry_points(group="rewind.wiring") if ep.name == name]
    if not found:
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} (no 'rewind.wiring' entry point {name!r}: is rewind installed?)")
    try:
        return found[0].load()
    except ImportError as e:
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} (the wiring {found[0].value} cannot be imported: {e})") from e


def load_default() -> tuple[Any, Any]:
    """``(policy, verifier)`` of the default run; ``FileNotFoundError`` naming the fix when there is none."""
    load = _wiring("default")
    try:
        policy, verifier = load()
    except FileNotFoundError as e:
        if "rewind demo" in str(e):
            raise
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} ({e})") from e
    return policy, verifier


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def load_parts(policy: Any, verifier: Any) -> tuple[Any, Any]:
    """``solve``'s ``(policy, verifier)``: objects pass through; ``None`` or a path (str or
    ``PathLike``) is loaded by the composition root. A verifier given as an object replaces the
    source's; one given as a path is loaded for the policy it will read."""
    if policy is None and verifier is None:
        return load_default()
    if not _is_path(policy) and policy is not None:
        if _is_path(verifier):
            return policy, _wiring("verifier")(verifier, policy)
        return policy, verifier
    if _is_path(verifier):
        return _wiring("load")(policy, verifier=verifier)
    pol, ver = load_default() if policy is None else _wiring("load")(policy)
    return pol, ver if verifier is None else verifier
