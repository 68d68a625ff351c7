"""prctl(2) through ctypes: tie a child process's life to its parent's."""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Used by forked workers and the demo backend, so that they never outlive their parent
    (e.g. after a SIGKILL of the supervisor). Does nothing where prctl is unavailable.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
