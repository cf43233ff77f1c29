"""Atomic writes publish files and folders with the usual permissions, not mkstemp's private ones."""

import os
import stat

from policy.atomic import atomic_dir, atomic_write_text


def test_atomic_artifacts_get_default_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "w").write_text("y")
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
        assert (tmp_path / "d" / "w").read_text() == "y"
    finally:
        os.umask(umask)
