"""The default policy and verifier for ``solve()`` with neither given.

``search`` imports neither ``policy`` nor ``verifier`` (DESIGN §6): the wiring is found through
the ``rewind.wiring`` entry point named ``default`` (``experiments.wiring:load_default``), a
function returning ``(policy, verifier)`` of the default run (``rewind demo``, or ``REWIND_RUN``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["NO_DEFAULT_RUN", "load_default"]

NO_DEFAULT_RUN = "no default run to search with: run `rewind demo` first, or set REWIND_RUN=<run folder>"


def load_default() -> tuple[Any, Any]:
    """``(policy, verifier)`` of the default run; ``FileNotFoundError`` naming the fix when there is none."""
    found = [ep for ep in entry_points(group="rewind.wiring") if ep.name == "default"]
    if not found:
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} (no 'rewind.wiring' entry point: is rewind installed?)")
    try:
        load = found[0].load()
    except ImportError as e:
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} (the wiring {found[0].value} cannot be imported: {e})") from e
    try:
        policy, verifier = load()
    except FileNotFoundError as e:
        if "rewind demo" in str(e):
            raise
        raise FileNotFoundError(f"{NO_DEFAULT_RUN} ({e})") from e
    return policy, verifier
