"""The pid file: written atomically, locked while Tunnel runs, removed at exit.

The lock is an ``flock`` on the pid file itself, held for the life of the supervisor. A
file nobody holds a lock on is stale (left by a crashed run) and is replaced; a locked
one means another Tunnel is running, and starting a second one is refused. The new
content is written to a temporary file that is locked *before* it is renamed over the
path, so there is no moment at which the path holds an unlocked or half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from tunnel.errors import TunnelError

log = logging.getLogger("tunnel.pidfile")


class PidFileError(TunnelError):
    """Another Tunnel holds the pid file, or the file cannot be written."""


def read_pid(path: str) -> int | None:
    """The pid stored in ``path``; None if the file is missing or holds no number."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class OwnedFile:
    """A file the supervisor holds open: dropped by forked children, removed at exit if ours.

    ``inode`` tells "still ours" from a file someone put in its place meanwhile. Shared by
    the pid file and the reload status file (:mod:`tunnel.process.reload_status`).
    """

    what = "file"  # for the log line
    path: str
    fd: int | None
    inode: int

    def close_in_child(self) -> None:
        """In a forked worker: drop the copy of the descriptor (for the pid file: the lock
        must die with the supervisor, not with its last worker). Does nothing once closed."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        """Delete the file if it is still ours; close it (releasing a lock on it)."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. a directory the dropped-to user may not write
            log.warning("cannot remove the %s %s: %s", self.what, self.path, exc.strerror)
        os.close(self.fd)
        self.fd = None


class PidFile(OwnedFile):
    """``claim()`` before serving (refuses if locked), ``write()`` once the final pid is known."""

    what = "pid file"

    def __init__(self, path: str) -> None:
        self.path = path
        self._claim_fd: int | None = None  # lock on the file found at start (if any)
        self.fd: int | None = None  # our own, locked pid file
        self.inode = 0

    def claim(self) -> None:
        """Refuse if a running Tunnel holds the file; keep a stale one locked until write()."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PidFileError(f"cannot open the pid file {self.path}: {exc.strerror}") from None
        if not _lock(fd):
            os.close(fd)
            pid = read_pid(self.path)
            who = f"pid {pid}" if pid else "another process"
            raise PidFileError(
                f"already running ({who} holds the pid file {self.path}); "
                "stop it first, or use another pid_file"
            )
        stale = read_pid(self.path)
        log.warning("replacing a stale pid file %s (pid %s is not running)", self.path, stale)
        self._claim_fd = fd

    def write(self, pid: int | None = None) -> None:
        """Atomically write ``pid`` (default: this process) to the path, locked."""
        pid = os.getpid() if pid is None else pid
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PidFileError(f"cannot write the pid file {self.path}: {exc.strerror}") from None
        try:
            _lock(fd)
            os.write(fd, f"{pid}\n".encode())
            os.fsync(fd)
            os.rename(tmp, self.path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise PidFileError(f"cannot write the pid file {self.path}: {exc.strerror}") from None
        self.fd, self.inode = fd, os.fstat(fd).st_ino
        if self._claim_fd is not None:
            os.close(self._claim_fd)
            self._claim_fd = None
