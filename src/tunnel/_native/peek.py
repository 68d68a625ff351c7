"""recv(2) with MSG_PEEK through ctypes: has a socket's peer closed, without reading?

The Python plane asks this of a client socket its event loop owns (uvloop does not lend
the socket object for a recv), when the handshake is done and nothing else came: the
compiled plane makes the same check in C (``client_left`` in ``fp_connect.c``).
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable
from functools import cache

_MSG_PEEK = 0x02
_MSG_DONTWAIT = 0x40


@cache
def _recv() -> Callable[..., int]:
    function = ctypes.CDLL(None, use_errno=True).recv
    function.restype = ctypes.c_ssize_t
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    recv: Callable[..., int] = function
    return recv


def peer_gone(fd: int) -> int | None:
    """None while the peer may still send (bytes wait, or nothing yet); 0 once its FIN is
    all that is left to read; else the socket's error (ECONNRESET, ...)."""
    byte = ctypes.create_string_buffer(1)
    while True:
        got = _recv()(fd, byte, 1, _MSG_PEEK | _MSG_DONTWAIT)
        if got > 0:
            return None
        if got == 0:
            return 0
        code = ctypes.get_errno()
        if code == errno.EINTR:
            continue
        return None if code in (errno.EAGAIN, errno.EWOULDBLOCK) else code
