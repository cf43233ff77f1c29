"""The one place that wires policy and verifier into search: the default run.

A *run folder* holds ``policy/`` (a ``Policy.save`` folder) and, optionally, ``verifier/`` (a
saved ``VerifierHead``) — or a ``run.json`` manifest naming where they are inside it (the layout
``rewind demo`` writes: ``{"policy": "train/policy", "verifier": "verifier_train/verifier"}``). The default run is ``$REWIND_RUN`` when set, else the last completed
``rewind demo`` run, recorded in ``$REWIND_HOME/default_run.json`` (``~/.rewind`` by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from policy.atomic import atomic_write_json

__all__ = ["default_run_dir", "load_default", "load_run", "rewind_home", "run_parts", "set_default_run"]

NO_RUN = "no default run: run `rewind demo` first, or set REWIND_RUN=<run folder>"


def rewind_home() -> Path:
    return Path(os.environ.get("REWIND_HOME", Path.home() / ".rewind")).expanduser()


def set_default_run(run_dir: str | os.PathLike) -> None:
    """Record ``run_dir`` as the default run (called when a demo run completes)."""
    atomic_write_json(rewind_home() / "default_run.json", {"path": str(Path(run_dir).resolve())})


def default_run_dir() -> Path:
    env = os.environ.get("REWIND_RUN")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"REWIND_RUN={env} is not a folder")
        return path
    pointer = rewind_home() / "default_run.json"
    if not pointer.exists():
        raise FileNotFoundError(NO_RUN)
    try:
        path = Path(json.loads(pointer.read_text())["path"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FileNotFoundError(f"{pointer} is corrupted ({e}); {NO_RUN}") from e
    if not path.is_dir():
        raise FileNotFoundError(f"the default run {path} no longer exists; {NO_RUN}")
    return path


def run_parts(run_dir: str | os.PathLike) -> tuple[Path, Path | None]:
    """(policy folder, verifier folder or None) of a run folder."""
    run_dir = Path(run_dir)
    manifest = run_dir / "run.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            pol, ver = run_dir / data["policy"], data.get("verifier")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{manifest} is corrupted ({e})") from e
        ver = run_dir / ver if ver else None
    else:
        pol, ver = run_dir / "policy", run_dir / "verifier"
    if not pol.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no policy at {pol}); {NO_RUN}")
    return pol, (ver if ver is not None and ver.is_dir() else None)


def load_run(run_dir: str | os.PathLike, *, with_verifier: bool = True) -> tuple[Any, Any]:
    """``(policy, verifier)`` of a run folder; the verifier is ``None`` if the run has none."""
    from policy import load_policy

    pol_dir, ver_dir = run_parts(run_dir)
    pol = load_policy(pol_dir)
    ver = None
    if with_verifier and ver_dir is not None:
        from verifier import load_verifier

        ver = load_verifier(ver_dir, pol)
    return pol, ver


def load_default() -> tuple[Any, Any]:
    """The entry point ``rewind.wiring:default`` used by ``search.solve`` with no policy given."""
    return load_run(default_run_dir())
