"""Where a policy comes from: one name or path → what ``load_policy`` loads.

Accepted, in the order they are recognised:

| given                                          | loads                                             |
| ---------------------------------------------- | ------------------------------------------------- |
| ``path/to/model.gguf``                         | that GGUF file (transformers ``gguf_file=``)      |
| a LoRA adapter folder (``adapter_config.json``) | its base (from ``rewind_policy.json`` or PEFT's ``base_model_name_or_path``) + the adapter |
| a policy folder (``config.json``)              | it                                                |
| a run folder (``run.json`` names the policy)   | ``RUN/<policy>``                                  |
| a training run folder (``OUT/policy/``)        | ``OUT/policy``                                    |
| anything else that looks like ``org/name``     | a hub name                                        |

Nothing here loads a model; ``locate`` only reads small JSON files, so a bad path fails fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ADAPTER_CONFIG", "Located", "locate"]

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's adapter folder marker
_META = "rewind_policy.json"


@dataclass(frozen=True)
class Located:
    """What to load. ``source`` is a folder or a hub name; ``base`` is an adapter's base."""

    kind: Literal["hub", "folder", "gguf", "adapter"]
    source: str
    gguf_file: str | None = None
    base: Located | None = None

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "source": self.source, "gguf_file": self.gguf_file}
        if self.base is not None:
            out["base"] = self.base.to_dict()
        return out


def _looks_like_path(name: str) -> bool:
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or name.endswith(".gguf")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); the folder is corrupted") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; the folder is corrupted")
    return data


def _adapter_base(folder: Path) -> Located:
    """The base an adapter was trained on: Rewind's own record first, then PEFT's field."""
    meta = _read_json(folder / _META) if (folder / _META).exists() else {}
    base = meta.get("adapter_base")
    if isinstance(base, dict) and base.get("source"):
        source, gguf = str(base["source"]), base.get("gguf_file")
    else:
        source, gguf = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path"), None
    if not source:
        raise ValueError(f"the adapter in {folder} names no base model (adapter_config.json has no "
                         "base_model_name_or_path); load its base yourself and apply it with peft")
    base_path = Path(source).expanduser()
    if gguf:
        target = base_path / gguf
        if not target.is_file():
            raise FileNotFoundError(f"the adapter in {folder} was trained on {target}, which does not exist; "
                                    "put the GGUF file back or merge the adapter where it exists")
        return Located("gguf", str(base_path), gguf_file=gguf)
    if _looks_like_path(source) and not base_path.exists():
        raise FileNotFoundError(f"the adapter in {folder} was trained on {source}, which does not exist; "
                                "put the base model back there or merge the adapter where it exists")
    try:
        return locate(source)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"the base model of the adapter in {folder} ({source}) cannot be loaded: {e}") from e


def locate(name_or_path: str | os.PathLike, *, gguf_file: str | None = None) -> Located:
    """Resolve a name or path (see the module table). Raises ``FileNotFoundError`` for a path that
    does not exist and ``ValueError`` for a folder that holds no policy."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"load_policy needs a model name or a folder path, got {name_or_path!r}")
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if gguf_file is not None:
        target = path / gguf_file
        if not target.is_file():
            raise FileNotFoundError(f"GGUF file {target} does not exist")
        return Located("gguf", str(path), gguf_file=gguf_file)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return Located("gguf", str(path.parent), gguf_file=path.name)
    if not path.exists():
        if _looks_like_path(name):
            raise FileNotFoundError(f"{path} does not exist (expected a policy folder, a run folder, a .gguf file "
                                    "or a LoRA adapter folder)")
        return Located("hub", name)
    if not path.is_dir():
        raise ValueError(f"{path} is not a policy checkpoint: expected a folder (or a .gguf file)")
    if (path / ADAPTER_CONFIG).exists():
        return Located("adapter", str(path), base=_adapter_base(path))
    if (path / "run.json").exists():  # first: a run folder may hold a config.json of its own (rewind demo's)
        entry = _read_json(path / "run.json").get("policy")
        if not isinstance(entry, str):
            raise ValueError(f"{path / 'run.json'} names no policy folder")
        return locate(path / entry)
    if (path / "config.json").exists():
        return Located("folder", str(path))
    if (path / "policy").is_dir():
        return locate(path / "policy")
    raise ValueError(f"{path} is not a policy checkpoint: no config.json, adapter_config.json, run.json or "
                     "policy/ folder in it (expected a save_pretrained folder, a run folder or an adapter)")
