"""Worker processes die with their parent: no decoder or Praat worker outlives a killed ``extract``.

Linux's ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill the calling process when its parent
exits, however the parent dies (SIGKILL, the OOM killer). Called first thing in every worker (DataLoader
``worker_init_fn``, process-pool ``initializer``). Elsewhere it does nothing; there, workers notice a dead
parent only when they next wait for work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGKILL when ``parent_pid`` (its parent) exits; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)
