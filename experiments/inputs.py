"""What an experiment runs on: the problems of a task, and a policy (with its verifier) from a run
folder, a bare policy folder or a hub name; plus the config hash that keeps two configs apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from experiments.wiring import load, resolve
from policy import data
from policy.atomic import atomic_write_json

__all__ = ["check_config", "check_source", "config_hash", "load_problems", "load_source", "source_identity"]

CONFIG_FORMAT = 1  # bump when rows of an older layout must not be read as this one's


def load_problems(task: Literal["builtin", "gsm8k"], n: int, *, seed: int = 0, split: str = "test") -> list:
    """``n`` held-out problems: the built-in generator's ``split`` (seeded), or the first ``n`` of
    GSM8K ``split`` (``train``/``test``, or a JSONL path)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of problems must be an int >= 1, got {n!r}")
    if task == "builtin":
        return list(data.generate_problems(n, seed=seed, split=split))
    if task == "gsm8k":
        problems = list(data.load_gsm8k(split))
        if n > len(problems):
            raise ValueError(f"GSM8K {split} has {len(problems)} problems; asked for {n}")
        return problems[:n]
    raise ValueError(f"task must be 'builtin' or 'gsm8k', got {task!r}")


def load_source(spec: str, *, signal: Literal["auto", "verifier", "policy"] = "verifier") -> tuple[Any, Any, dict]:
    """``(policy, verifier, identity)`` of ``spec`` — any source ``experiments.wiring.resolve``
    takes: a run folder, a policy or adapter folder, a ``.gguf`` file or a hub model name.

    ``signal="verifier"`` needs the run's verifier (refused clearly when there is none);
    ``signal="policy"`` prunes with the policy's own P(⟨b⟩) and loads no verifier; ``"auto"`` uses
    the verifier when the run has one.
    """
    if not spec or not str(spec).strip():
        raise ValueError("no policy given: pass --run RUN (a run folder, a policy folder) or --model NAME_OR_PATH")
    src = resolve(spec)
    policy, verifier = load(spec, signal=signal)
    pol_dir = Path(src.policy) if Path(src.policy).exists() else None
    return policy, verifier, source_identity(spec, pol_dir, src.verifier if verifier is not None else None)


def _stamp(folder: Path | None) -> str | None:
    """Sizes and mtimes of a folder's files: changes when a run is retrained in place."""
    if folder is None:
        return None
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    text = "|".join(f"{p.name if p == folder else p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in files)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_identity(spec: str, pol_dir: Path | None, ver_dir: Path | None) -> dict:
    return {"spec": str(spec), "policy": str(pol_dir.resolve()) if pol_dir else str(spec),
            "policy_stamp": _stamp(pol_dir), "verifier": str(ver_dir.resolve()) if ver_dir else None,
            "verifier_stamp": _stamp(ver_dir)}


def config_hash(config: Any, *, ignore: tuple[str, ...] = (), **extra: Any) -> str:
    """A short hash of a config dataclass (fields in ``ignore`` left out, ``extra`` added): every
    row carries it, so rows of two configs are never counted together.

    Fields the config class names in its ``HASHED_WHEN_SET`` (a ``ClassVar``: fields added after
    results of that config existed) enter the hash only when set away from their default, so a
    config that leaves them at their defaults keeps the hash it had before they existed, and its
    finished results stay its own."""
    when_set = set(getattr(type(config), "HASHED_WHEN_SET", ()))
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ignore and not (k in when_set and v == defaults[k])}
    payload = {"format": CONFIG_FORMAT, "config": fields, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_config(out: str | os.PathLike, record: dict, *, command: str, ignore: tuple[str, ...] = ()) -> None:
    """Write ``OUT/config.json``, or refuse when it holds another config (results of two configs
    never share a folder). ``record`` must hold ``config_hash``; ``ignore`` lists config fields
    that may differ on a rerun (e.g. ``progress``)."""
    out = Path(out)
    path = out / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is corrupted ({e}); remove the folder or choose another --out") from e
        if old.get("format") != CONFIG_FORMAT:
            raise ValueError(f"{out} was written by another version of rewind (results format "
                             f"{old.get('format')!r}; this one writes {CONFIG_FORMAT}); choose another --out")
        if old.get("command") != command:
            raise ValueError(f"{out} holds results of `rewind {old.get('command')}`, not `rewind {command}`; "
                             "choose another --out")
        if old.get("config_hash") != record["config_hash"]:
            changed = sorted(k for k in set(old.get("config", {})) | set(record.get("config", {}))
                             if k not in ignore and old.get("config", {}).get(k) != record.get("config", {}).get(k))
            what = f" (changed: {', '.join(changed)})" if changed else " (the policy/verifier files changed)"
            raise ValueError(f"{out} holds results of another config{what}; rerun with the same flags to resume, "
                             "or choose another --out")
        return
    atomic_write_json(path, {"command": command, "format": CONFIG_FORMAT, **record})


def check_source(run: str | None, model: str | None, out: str | None) -> None:
    """The flags every study that loads a policy shares: ``--out`` and exactly one of ``--run`` / ``--model``."""
    if not out:
        raise ValueError("--out (the results folder) is required")
    if run and model and run != model:
        raise ValueError("pass either --run or --model, not both")
    if not (run or model):
        raise ValueError("pass --run RUN (a run or policy folder) or --model NAME_OR_PATH")
