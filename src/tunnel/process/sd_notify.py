"""systemd's readiness protocol (``Type=notify``) and socket activation, in pure Python.

``notify("READY=1")`` sends one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); without that
variable it does nothing. :func:`listen_fds` takes the listening sockets systemd passes
with ``LISTEN_FDS``/``LISTEN_PID`` (file descriptors from 3 on) and removes the variables,
so that the workers Tunnel forks do not take them for their own.
"""

from __future__ import annotations

import contextlib
import os
import socket

SD_LISTEN_FDS_START = 3


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    return value


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (newline-separated ``KEY=value`` lines); True if it was sent."""
    env = os.environ if environ is None else environ
    target = env.get("NOTIFY_SOCKET", "")
    if not target or target[0] not in "/@":
        return False
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.sendto(state.encode(), _address(target))
        return True
    return False


def listen_fds(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed by systemd socket activation ([] without them)."""
    env = os.environ if environ is None else environ
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        socks.append(socket.socket(fileno=fd))
    return socks
