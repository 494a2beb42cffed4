"""Worker processes that die with their job.

A pool or DataLoader worker outlives a parent killed by SIGKILL, SIGTERM or the OOM killer: it
keeps writing files for a job already reported failed, then waits forever. Each worker asks the
kernel (Linux `prctl(PR_SET_PDEATHSIG)`) to kill it when its parent dies, and exits at once if the
parent is already gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker process (a pool initializer, a DataLoader worker_init_fn),
    with the pid of the process that started it (read there, before the worker existed)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(1)
