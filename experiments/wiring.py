"""The composition root: the one place that turns names and folders into a policy and a verifier,
for every command and for ``search.solve``'s default (through the ``rewind.wiring`` entry points).

What a *source* may be (``resolve``):

| given                                  | policy                                   | verifier                        |
| -------------------------------------- | ---------------------------------------- | ------------------------------- |
| nothing                                | the default run's (below)                | the default run's               |
| a run folder with ``run.json``         | ``RUN/<run.json policy>``                | ``RUN/<run.json verifier>``     |
| a training run folder (``OUT/policy``) | ``OUT/policy``                           | ``OUT/verifier`` if present     |
| a policy or LoRA adapter folder        | it                                       | none                            |
| a ``.gguf`` file, a hub name           | it                                       | none                            |

The policy column is exactly what ``policy.load_policy`` resolves (``policy.locate`` reads the
same ``run.json``); a verifier folder given on its own (``--verifier``) replaces the run's. The
default run is ``$REWIND_RUN`` when set, else the last completed ``rewind demo`` run, recorded in
``$REWIND_HOME/default_run.json`` (``~/.rewind`` by default).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from policy import load_policy
from policy.atomic import atomic_write_json
from policy.locate import locate
from verifier import load_verifier

__all__ = ["NO_RUN", "Sources", "default_run_dir", "load", "load_default", "load_run", "load_verifier_for", "resolve", "rewind_home",
           "run_parts", "set_default_run"]

NO_RUN = "no default run: run `rewind demo` first, or set REWIND_RUN=<run folder>"
RUN_MANIFEST = "run.json"  # {"policy": "train/policy", "verifier": "verifier_train/verifier"} (rewind demo)


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


def is_run_folder(path: Path) -> bool:
    """A folder that holds a policy *and may hold a verifier*: ``run.json``, or ``policy/`` inside."""
    return path.is_dir() and ((path / RUN_MANIFEST).exists() or (path / "policy").is_dir())


def run_parts(run_dir: str | os.PathLike) -> tuple[Path, Path | None]:
    """(policy folder, verifier folder or None) of a run folder."""
    run_dir = Path(run_dir).expanduser()
    manifest = run_dir / RUN_MANIFEST
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
        if (run_dir / "checkpoints").is_dir() or (run_dir / "train").is_dir():
            raise ValueError(f"{run_dir} is a half-finished run (checkpoints or stages, but no policy at {pol}): "
                             "finish it (rewind train-policy --resume, or rerun rewind demo) first")
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no policy at {pol}); {NO_RUN}")
    return pol, (ver if ver is not None and ver.is_dir() else None)


@dataclass(frozen=True)
class Sources:
    """Where a policy and its verifier come from (nothing loaded yet)."""

    spec: str  # as given ("" for the default run)
    policy: str  # what policy.load_policy takes: a folder, a .gguf file or a hub name
    verifier: Path | None  # a verifier folder, or None
    run: Path | None  # the run folder, when the source is one


def resolve(spec: str | os.PathLike | None = None, *, verifier: str | os.PathLike | None = None) -> Sources:
    """The policy and verifier that ``spec`` names (see the module table); ``verifier`` overrides
    the run's. Reads only small files: a bad path fails before any model is loaded."""
    if spec is not None and not str(spec).strip():
        raise ValueError("no policy given: pass a run folder, a policy folder, a .gguf file or a hub model name")
    path = default_run_dir() if spec is None else Path(spec).expanduser()
    # run.json wins over config.json: a demo run folder holds both (its own config.json is no model's)
    if is_run_folder(path) and ((path / RUN_MANIFEST).exists() or not (path / "config.json").exists()):
        pol_dir, ver_dir = run_parts(path)
        src = Sources(str(spec or ""), str(pol_dir), ver_dir, path)
    else:
        if path.is_dir() and ((path / "checkpoints").is_dir() or (path / "train").is_dir()) \
                and not (path / "config.json").exists():
            run_parts(path)  # says what is missing
        locate(path if path.exists() else str(spec))  # fails fast on a path that holds no policy
        src = Sources(str(spec), str(path) if path.exists() else str(spec), None, None)
    if verifier is not None:
        vpath = Path(verifier).expanduser()
        if not vpath.exists():
            raise FileNotFoundError(f"verifier {vpath} does not exist")
        src = Sources(src.spec, src.policy, vpath, src.run)
    return src


def load(spec: str | os.PathLike | None = None, *, verifier: str | os.PathLike | None = None,
         signal: Literal["auto", "verifier", "policy"] = "auto", **policy_options: Any) -> tuple[Any, Any]:
    """``(policy, verifier)`` of ``spec`` (``resolve``). ``signal="verifier"`` needs a verifier
    (refused clearly when there is none), ``"policy"`` loads none (the policy's own P(⟨b⟩) prunes),
    ``"auto"`` loads one when the source has one. ``policy_options`` go to ``load_policy``."""
    if signal not in ("auto", "verifier", "policy"):
        raise ValueError(f"signal must be 'auto', 'verifier' or 'policy', got {signal!r}")
    src = resolve(spec, verifier=verifier)
    pol = load_policy(src.policy, **policy_options)
    if signal == "verifier" and src.verifier is None:
        raise FileNotFoundError(f"{src.spec or 'the default run'} has no verifier (no verifier/ in a run folder): "
                                "train one with `rewind train-verifier --policy RUN --out RUN_VERIFIER`, "
                                "or pass --signal policy")
    ver = load_verifier_for(src.verifier, pol) if src.verifier is not None and signal != "policy" else None
    return pol, ver


def load_verifier_for(verifier: str | os.PathLike, policy: Any) -> Any:
    """The verifier at ``verifier`` (a folder, a train-verifier run, or a run folder) for ``policy``."""
    path = Path(verifier).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"verifier {path} does not exist")
    if is_run_folder(path) and (path / RUN_MANIFEST).exists():
        _, found = run_parts(path)
        if found is None:
            raise FileNotFoundError(f"the run {path} has no verifier")
        path = found
    return load_verifier(path, policy)


def load_run(run_dir: str | os.PathLike, *, with_verifier: bool = True) -> tuple[Any, Any]:
    """``(policy, verifier)`` of a run folder; the verifier is ``None`` if the run has none."""
    return load(run_dir, signal="auto" if with_verifier else "policy")


def load_default() -> tuple[Any, Any]:
    """The entry point ``rewind.wiring:default`` used by ``search.solve`` with no policy given."""
    return load(None)
