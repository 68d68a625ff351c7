"""The outcome of the last reload, for ``tunnel reload`` to wait on.

A signal carries no answer, so the supervisor publishes the state of its reloads in a
one-line JSON file next to the pid file (``<pid_file>.status``); this works whether or not
the admin endpoint is configured, and whoever can signal the supervisor through its pid
file can read it. ``serial`` counts the reloads attempted since start; ``state`` is
``pending`` while one runs, then ``ok`` (every worker of the new generation has reported,
so it serves) or ``failed`` (the configuration did not load, or a new worker died before
it reported). ``tunnel reload`` reads the serial, sends SIGHUP and waits for a larger one
in a final state. A reload that a watched file triggered in between counts as the answer:
it read the same files.

The supervisor creates the file before it drops privileges and rewrites it in place
through the descriptor it keeps (the directory may not be writable afterwards); a reader
that catches it half-written (no final newline yet) reads again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tunnel.errors import TunnelError
from tunnel.process.pidfile import OwnedFile

log = logging.getLogger("tunnel.supervisor")

PENDING, OK, FAILED = "pending", "ok", "failed"
_POLL = 0.05


def status_path(pid_file: str) -> str:
    """Where the reload status of the Tunnel with this pid file is published."""
    return f"{pid_file}.status"


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The state of the last reload (``serial`` 0: none since start)."""

    serial: int
    generation: int
    state: str
    message: str = ""

    def encode(self) -> bytes:
        """The file's content: one JSON line."""
        return json.dumps(asdict(self), separators=(",", ":")).encode() + b"\n"


def parse_status(data: bytes) -> ReloadStatus | None:
    """The status in ``data``; None if it is incomplete or not a status (pure)."""
    if not data.endswith(b"\n"):
        return None
    try:
        fields = json.loads(data)
        status = ReloadStatus(
            int(fields["serial"]),
            int(fields["generation"]),
            str(fields["state"]),
            str(fields.get("message", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return status


class ReloadTracker:
    """The supervisor's bookkeeping of reloads; each change goes to ``publish``."""

    def __init__(self, publish: Callable[[ReloadStatus], None]) -> None:
        self.publish = publish
        self.status = ReloadStatus(0, 1, OK, "started")
        self.awaiting = False  # the new generation has not reported yet

    def _set(self, state: str, generation: int, message: str = "") -> None:
        self.status = ReloadStatus(self.status.serial, generation, state, message)
        self.publish(self.status)

    def begin(self) -> None:
        """A reload starts (a new serial)."""
        old = self.status
        self.status = ReloadStatus(old.serial + 1, old.generation, PENDING)
        self.awaiting = False
        self.publish(self.status)

    def failed(self, reason: str) -> None:
        """The reload failed before a new generation existed; the old one serves on."""
        self._set(FAILED, self.status.generation, reason)

    def forked(self, generation: int) -> None:
        """The new generation is forked; it serves once every worker has reported."""
        self.awaiting = True
        self._set(PENDING, generation)

    def poll(self, all_reporting: bool) -> None:
        """Called by the supervisor loop: finish the reload once the workers report."""
        if self.awaiting and all_reporting:
            self.awaiting = False
            self._set(OK, self.status.generation, f"generation {self.status.generation} serving")

    def worker_died(self, index: int, how: str) -> None:
        """A worker of the new generation ended before reporting: the reload failed."""
        if self.awaiting:
            self.awaiting = False
            self._set(
                FAILED,
                self.status.generation,
                f"worker {index} of generation {self.status.generation} {how} during "
                "start-up (see the log); the supervisor keeps restarting it",
            )


class StatusFile(OwnedFile):
    """The supervisor's end: the file, kept open, rewritten in place."""

    what = "reload status file"

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.inode = os.fstat(self.fd).st_ino

    def write(self, status: ReloadStatus) -> None:
        """Replace the content with ``status`` (errors are logged: serving goes on)."""
        if self.fd is None:
            return
        data = status.encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError as exc:
            log.warning("cannot write the reload status to %s: %s", self.path, exc.strerror)


def read_status(path: str, attempts: int = 20) -> ReloadStatus | None:
    """The published status; None if the file is missing (or stays half-written)."""
    for _ in range(attempts):
        try:
            with open(path, "rb") as stream:
                status = parse_status(stream.read(4096))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TunnelError(f"cannot read the reload status {path}: {exc.strerror}") from None
        if status is not None:
            return status
        time.sleep(0.01)  # caught between the supervisor's truncate and write
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_outcome(path: str, after: int, pid: int, timeout: float) -> ReloadStatus:
    """Wait until the status file reports a finished reload with a serial above ``after``.

    Raise TunnelError if the supervisor exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(path)
        if status is not None and status.serial > after and status.state != PENDING:
            return status
        if not _alive(pid):
            raise TunnelError(f"Tunnel (pid {pid}) exited during the reload: see its log")
        if time.monotonic() >= deadline:
            raise TunnelError(
                f"no reload outcome from pid {pid} within {timeout:g}s "
                f"({path}); it may still finish: see its log"
            )
        time.sleep(_POLL)
