"""``side_job``: one independent job in a second process while the caller works on, one thread each.

On a small CPU box the tiny policy's decoding does not fill two cores from one process: a batch of
64 sampled solutions runs only 1.33x faster on 2 threads than on 1, and two 1-thread processes
decode side by side at almost their lone speed (2026-11-30, 2-core EPYC: 1.45 s alone, 1.56 s side
by side; a 2-thread process beside a 1-thread one slows to 3x: never oversubscribe). So two
independent jobs finish sooner side by side at one thread each than one after the other at two.

What a job computes does not depend on where it runs, only on the thread count: a few matrix
products round differently on 1 thread than on 2, so a side job's result is the result of the
same work done here at 1 thread, to the bit (tested in ``tests/test_verifier_side_labels.py`` and
``tests/test_demo.py``), and equal to a 2-thread run up to that rounding.

The job runs in a fresh interpreter (``python -m policy.workers``), not a fork: the caller may be a
script without a ``__main__`` guard, which ``multiprocessing``'s spawn and fork server would run
again. So ``fn`` must be importable by module and name, and its arguments and result picklable —
pass big tensors through files. Where there is only one core, ``side_job`` runs the job first,
here, and the caller's part after it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["can_run_side_jobs", "side_job"]


def can_run_side_jobs() -> bool:
    """There are at least two cores to share."""
    return (os.cpu_count() or 1) >= 2


class SideJobError(RuntimeError):
    """A side job raised (its type and message are in the text) or its process died."""


@contextmanager
def side_job(fn: Callable, args: Sequence[Any] = (), *, threads: int = 1) -> Iterator[Future]:
    """Start ``fn(*args)`` in a second process with ``threads`` torch threads and run the ``with``
    body here with ``threads`` threads too; yields the job's ``Future``, done once the ``with``
    block is left (leaving waits for the job; its error is raised by ``result()``, not on exit).
    The caller's thread count is restored on exit."""
    done: Future = Future()
    if not can_run_side_jobs():
        try:
            done.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 - handed to the caller through the future, as a process would
            done.set_exception(e)
        yield done
        return
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="rewind-side-job-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((_module_of(fn), fn.__qualname__, tuple(args), threads)))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # what imports here imports there
        proc = subprocess.Popen([sys.executable, "-m", "policy.workers", str(job), str(result)], env=env)
        torch.set_num_threads(threads)
        try:
            yield done
        except BaseException:
            proc.kill()  # the caller failed (or was interrupted): its side job is of no use
            raise
        finally:
            code = proc.wait()
            torch.set_num_threads(before)
            if result.exists():
                ok, value = pickle.loads(result.read_bytes())
                done.set_result(value) if ok else done.set_exception(SideJobError(value))
            else:
                done.set_exception(SideJobError(f"the side job's process ended with exit code {code} and no result"))


def _module_of(fn: Callable) -> str:
    """The importable name of ``fn``'s module (``python -m pkg.mod`` runs ``pkg.mod`` as ``__main__``)."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ValueError(f"a side job's function must live in an importable module, not a script: "
                             f"{fn.__qualname__} is in {getattr(sys.modules['__main__'], '__file__', '__main__')}")
        module = spec.name
    return module


def _main(job: str, result: str) -> int:
    module, name, args, threads = pickle.loads(Path(job).read_bytes())
    torch.set_num_threads(threads)
    try:
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        out = (True, fn(*args))
    except Exception as e:  # noqa: BLE001 - the caller decides what a failed job means
        out = (False, f"{type(e).__name__}: {e}")
    tmp = Path(result).with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(out))
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
