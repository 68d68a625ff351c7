"""Hand freed heap memory back to the kernel (glibc's ``malloc_trim``), via ctypes.

Why: glibc gives memory back to the system only from the top of its heap. The buffers a
connection frees when it goes quiet (:meth:`tunnel.dataplane.relay.TLSSide.release_buffers`, ~85 KiB
per memory BIO after a 64 KiB chunk) lie between live objects of other connections, so
their pages would stay resident. Measured with ``bench/memory_breakdown.py --burst 65536``
(2,000 connections idle after a 64 KiB burst each): 84 KiB RSS per connection with the
buffers kept, 81 KiB with them freed, 18.9 KiB after ``malloc_trim(0)``, which advises
every whole free page away (4 ms for that heap). A worker calls it every
``TRIM_SECONDS``. Elsewhere than glibc (no ``malloc_trim``) this does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from typing import Any

TRIM_SECONDS = 10.0


@cache
def _malloc_trim() -> Callable[..., Any] | None:
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_size_t]
    return function


def available() -> bool:
    """Whether this C library can give freed memory back (glibc)."""
    return _malloc_trim() is not None


def release_free_memory() -> None:
    """Return the whole free pages of every malloc arena to the kernel, if possible."""
    function = _malloc_trim()
    if function is not None:
        function(0)
