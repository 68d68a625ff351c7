"""Files that hold secrets (private keys, TLS key logs): created mode 0600, never wider.

Everything Tunnel writes that could decrypt traffic goes through here: the key of
``tunnel gen-cert`` and ``tunnel demo`` and the ACME state (:func:`write_private_file`), and
the NSS key log of ``keylog_file`` (:func:`set_keylog`). OpenSSL and CPython would create
the key log with the process umask (usually 0644), readable by every local user.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # serving processes write no files here: tempfile and pathlib cost ~1 MB
    from pathlib import Path

PRIVATE_MODE = 0o600


def write_private_file(path: Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 (parent directories 0700 when created).

    Raises FileExistsError if ``path`` exists and ``force`` is false. With ``force`` the
    file is replaced atomically (a reader sees the old file or the new one, never half).
    The data reaches the disk before this returns: a key must survive a power cut.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
        _write_all(fd, data)
        return
    import tempfile  # only gen-cert, demo and ACME replace files (tempfile: ~0.8 MB)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        _write_all(fd, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def ensure_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 if missing; narrow an existing file to 0600.

    OSError if it cannot be created or its mode changed (e.g. owned by another user).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)


def set_keylog(ctx: ssl.SSLContext, path: str) -> None:
    """Append the TLS secrets of ``ctx``'s sessions to ``path``, a file only its owner reads."""
    ensure_private_file(path)
    ctx.keylog_filename = path
