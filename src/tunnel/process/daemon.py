"""Detaching from the terminal (``daemon = yes``) with the outcome reported back.

:func:`daemonize` forks twice (with ``setsid`` in between, so the daemon has no
controlling terminal and is not a session leader), points stdin/stdout/stderr at
``/dev/null`` and changes to ``/``. The original process does not exit at once: it waits
on a pipe until the daemon reports that it serves (``ok``) or why it could not start
(``fail``), so ``tunnel run --daemon`` in a script or an init system still ends with the
right exit code and message. If the daemon dies without a word, the pipe's end-of-file
says so.
"""

from __future__ import annotations

import contextlib
import os

_OK = b"ok "


class Reporter:
    """The daemon's end of the start-up pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ok(self) -> None:
        """Tell the waiting process that start-up succeeded, and the daemon's pid."""
        self._send(_OK + str(os.getpid()).encode())

    def fail(self, code: int, message: str) -> None:
        """Tell the waiting process that start-up failed, and why."""
        self._send(f"fail {code} {message}".encode(errors="replace"))

    def close_in_child(self) -> None:
        """In a forked worker: drop the copy of the pipe, if the daemon still holds it.

        Once the report is sent the pipe is closed and ``fd`` is -1, so a worker forked
        later (after a reload or a restart) closes nothing: the old number may by then
        belong to one of the supervisor's report channels or sockets.
        """
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def _send(self, data: bytes) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, data)
            os.close(self.fd)
        self.fd = -1


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def parse_report(data: bytes) -> tuple[int, str]:
    """The exit code and message for what the daemon reported (pure).

    On success the message is the daemon's pid.
    """
    if data.startswith(_OK) and data[len(_OK) :].isdigit():
        return 0, data[len(_OK) :].decode()
    if data.startswith(b"fail "):
        code, _, message = data[5:].decode(errors="replace").partition(" ")
        if code.isdigit():
            return int(code), message
    return 1, "the daemon exited during start-up (see its log)"


def daemonize() -> Reporter | tuple[int, str]:
    """Detach. In the daemon, return its Reporter; in the original process, wait for the
    daemon's report and return ``(exit code, message)`` (see :func:`parse_report`)."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first > 0:  # the original process
        os.close(write_end)
        os.waitpid(first, 0)
        try:
            return parse_report(_read_all(read_end))
        finally:
            os.close(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the intermediate process; the daemon is re-parented to init
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    return Reporter(write_end)
