"""``policy.workers.side_job``: a job in a second process beside the caller's own work."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from policy.workers import SideJobError, can_run_side_jobs, side_job

pytestmark = pytest.mark.skipif(not can_run_side_jobs(), reason="needs two cores")


def test_the_job_runs_elsewhere_and_returns_its_result():
    import os

    with side_job(os.getpid) as future:
        here = os.getpid()
        assert torch.get_num_threads() == 1  # the caller's part runs at the job's thread count
    assert future.result() != here


def test_thread_count_is_restored_and_errors_reach_the_caller():
    before = torch.get_num_threads()
    with side_job(int, ("not a number",)) as future:
        pass
    assert torch.get_num_threads() == before
    with pytest.raises(SideJobError, match="ValueError: invalid literal"):
        future.result()


def test_a_failing_caller_stops_its_side_job():
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="caller"), side_job(time.sleep, (60,)):
        raise RuntimeError("the caller failed")
    assert time.perf_counter() - t0 < 30


def test_a_script_without_a_main_guard_is_not_run_again(tmp_path):
    """The side process is a fresh ``python -m policy.workers``: a user's script is not re-executed
    (multiprocessing's spawn and fork server would run this one again, and again)."""
    script = tmp_path / "user_script.py"
    script.write_text("import os\nfrom policy.workers import side_job\nprint('script ran', flush=True)\n"
                      "with side_job(os.getpid) as f:\n    pass\nprint('pid', f.result() != os.getpid())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("script ran") == 1 and "pid True" in out.stdout


def test_a_job_defined_in_a_module_run_with_dash_m_is_found(tmp_path):
    """``python -m pkg.mod`` runs ``pkg.mod`` as ``__main__``: its functions are found under their
    module's name; a function of a plain script is refused with a clear error."""
    pkg = tmp_path / "sidepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("import os\nfrom policy.workers import side_job\n\ndef twice(x):\n    return 2 * x\n\n"
                                "if __name__ == '__main__':\n    with side_job(twice, (21,)) as f:\n        pass\n"
                                "    print('got', f.result())\n")
    out = subprocess.run([sys.executable, "-m", "sidepkg.job"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0 and "got 42" in out.stdout, out.stderr
    script = tmp_path / "plain.py"
    script.write_text("from policy.workers import side_job\n\ndef f():\n    return 1\n\n"
                      "with side_job(f) as fut:\n    pass\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "importable module" in out.stderr
