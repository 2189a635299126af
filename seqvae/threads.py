"""CPU threads: how many intra-op threads a process uses, and idle OpenMP threads that sleep.

PyTorch's CPU wheel runs its kernels on GNU OpenMP. By default every process takes one thread
per core and, between parallel regions, its idle threads spin for a while (GOMP_SPINCOUNT
300,000 iterations) instead of sleeping. On a machine where another job holds a core, a thread
that spins burns the time slice the descheduled thread it waits for needs: a small model on
two cores then trains ten to twenty times slower, not two. seqvae therefore

- asks OpenMP to let idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``), unless the user set a
  wait policy or spin count. libgomp reads these once, when PyTorch loads it, so
  :func:`quiet_openmp` must run before ``import torch``: the command line calls it first;
- uses ``--threads`` intra-op threads, by default ``$OMP_NUM_THREADS`` when set (torchrun sets
  it), otherwise the cores this process may use (its CPU affinity and cgroup quota) divided
  among the processes that share them (``seqvae bench --jobs N``, or torchrun's
  ``LOCAL_WORLD_SIZE``).

``benchmarks/threads.py`` measures both, idle and with a competing job.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from seqvae.errors import UserError

WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment seqvae sets before PyTorch loads OpenMP, where the user set nothing."""
_USER_WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def quiet_openmp(environ: dict[str, str] | None = None) -> bool:
    """Let idle OpenMP threads sleep (see the module docstring), where the user chose no wait
    policy or spin count. Returns whether it took effect: not if PyTorch was already imported,
    since OpenMP reads its environment once, when it loads."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return False
    if not any(key in environ for key in _USER_WAIT_KEYS):
        environ.update(WAIT_DEFAULTS)
    return True


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, bounded by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.floor(quota)) if quota else cores)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """cgroup v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") as cores, or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1.0, int(quota) / int(period))


def default_threads(jobs: int | None = None, environ: dict[str, str] | None = None) -> int:
    """``$OMP_NUM_THREADS`` when set to a positive number, otherwise this process's share of
    the cores: ``available_cores() // jobs``, ``jobs`` defaulting to ``$LOCAL_WORLD_SIZE``."""
    environ = os.environ if environ is None else environ
    text = environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if jobs is None:
        local = environ.get("LOCAL_WORLD_SIZE", "1")
        jobs = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, available_cores() // jobs)


def set_threads(threads: int | None = None, jobs: int | None = None) -> int:
    """Use ``threads`` intra-op threads (None: :func:`default_threads`); returns the number."""
    import torch

    if threads is not None and threads < 1:
        raise UserError(f"--threads: expected a positive number, got {threads}")
    count = default_threads(jobs) if threads is None else threads
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
