"""A running Tunnel supervisor as the tests see it: its log, what it bound, its workers.

* :class:`Supervised` is what a test can do with a running supervisor: read its log,
  wait for a line, find the addresses it bound (from its ``listener NAME: ... ->`` log
  line, so listeners can say port 0), find and signal its workers (through /proc).
* :class:`TunnelProcess` is a supervisor the test started (its child), with
  :meth:`TunnelProcess.stop`, which ends it and every worker it ever had, by PID;
  :class:`harness.service.Service` is the same for a daemon.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .net import parse_host_port
from .procfs import alive, children
from .waits import DEADLINE, wait_for, wait_until

# "listener web: 127.0.0.1:41234, [::1]:41234 -> 127.0.0.1:8080" (the supervisor's line)
_LISTENER_LINE = r"listener {name}: ((?:\S+:\d+)(?:, \S+:\d+)*) -> "
_ADMIN_LINE = r"admin endpoint: (\S+:\d+)"


class Supervised:
    """What a test can do with a running Tunnel supervisor, however it was started: read
    its log, wait for a line, find what it bound, find and signal its workers by PID."""

    known_children: set[int]

    @property
    def pid(self) -> int:
        """The supervisor's process id."""
        raise NotImplementedError

    def log(self) -> str:
        """Everything the tunnel logged so far."""
        raise NotImplementedError

    def gone(self) -> str | None:
        """Why the supervisor is not running any more, or None while it runs."""
        raise NotImplementedError

    def wait_line(
        self, pattern: str, *, start: int = 0, timeout: float = DEADLINE
    ) -> re.Match[str]:
        """Wait for a regex to appear in the log (from offset ``start``); return the match.
        Fails at once if the supervisor is gone without logging it."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            gone = self.gone()
            match = re.search(pattern, self.log()[start:])
            if match:
                found.append(match)
            elif gone is not None:
                pytest.fail(f"tunnel {gone}:\n{self.log()}")
            return bool(match)

        wait_for(f"log line {pattern!r}", check, timeout)
        return found[0]

    def conn_lines(self) -> list[str]:
        """The per-connection summary lines logged so far."""
        return [line for line in self.log().splitlines() if " conn peer=" in line]

    # -- what it bound --------------------------------------------------------------------
    def bound(self, listener: str = "test") -> list[tuple[str, int]]:
        """The addresses ``listener`` listens on, from its latest start-up/reload log line."""
        lines = re.findall(_LISTENER_LINE.format(name=re.escape(listener)), self.log())
        assert lines, f"no listener {listener!r} line in the log:\n{self.log()[-3000:]}"
        return [parse_host_port(word) for word in lines[-1].split(", ")]

    def bound_port(self, listener: str = "test") -> int:
        """The port of ``listener``'s first address."""
        return self.bound(listener)[0][1]

    def admin_port(self) -> int:
        """The port of the admin endpoint (logged at start)."""
        return parse_host_port(self.wait_line(_ADMIN_LINE).group(1))[1]

    # -- processes -----------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """The current worker process ids (children of the supervisor)."""
        pids = children(self.pid)
        self.known_children.update(pids)
        return pids

    def signal(self, signo: int) -> None:
        """Send ``signo`` to the supervisor."""
        self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)

    def kill_workers(self) -> None:
        """SIGKILL every worker ever seen that is still alive, by PID."""
        for pid in self.known_children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class TunnelProcess(Supervised):
    """One ``tunnel`` process the test started, with its output in files.

    ``grace`` is how long :meth:`stop` lets it drain after the first SIGTERM before the
    second one (which closes every connection at once).
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        out_path: Path,
        err_path: Path,
        *,
        workers: int = 1,
        grace: float = 0.0,
    ) -> None:
        self.popen = popen
        self.out_path = out_path
        self.err_path = err_path
        self.workers = workers
        self.grace = grace
        self.known_children = set()
        self.host = "127.0.0.1"
        self.port = 0

    # -- identity and output --------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The ``Popen`` object (the name the integration tests use)."""
        return self.popen

    @property
    def known_pids(self) -> set[int]:
        """Every worker pid seen so far (the name the integration tests use)."""
        return self.known_children

    @property
    def log_path(self) -> Path:
        """Where the log (stderr) goes."""
        return self.err_path

    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        """Everything written to stderr (the log) so far."""
        return self.err_path.read_text(errors="replace")

    def log(self) -> str:
        """Everything the tunnel logged so far (its stderr)."""
        return self.stderr()

    def wait_log(self, pattern: str, timeout: float = DEADLINE, start: int = 0) -> re.Match[str]:
        """:meth:`wait_line` (with the argument order the tests have always used)."""
        return self.wait_line(pattern, start=start, timeout=timeout)

    def gone(self) -> str | None:
        """'exited (CODE)' once the process has exited."""
        code = self.popen.poll()
        return None if code is None else f"exited ({code})"

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the supervisor logged its start and every worker serves."""

        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"tunnel exited with {self.popen.returncode}:\n{self.log()}")
            text = self.log()
            return (
                "tunnel started" in text
                and len(self.worker_pids()) >= self.workers  # more: an ACME process
                and all(f"worker {i} started" in text for i in range(self.workers))
            )

        wait_until(ready, timeout, what="tunnel start")

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for exit; return the exit code."""
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """SIGTERM (drain for ``grace`` s), SIGTERM again, then SIGKILL whatever is left of
        the process and every worker it had, by PID."""
        self.worker_pids()
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGTERM)  # the second one: no drain
                try:
                    self.popen.wait(8)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(5)
        self.kill_workers()

    # -- clients -------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect (the ``test`` listener's first address)."""
        return (self.host, self.port)

    def connect(self, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
        """A TLS client connection (``suppress_ragged_eofs`` off: a bare FIN raises)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.connect(self.address)
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)

    def raw(self, timeout: float = 10.0) -> socket.socket:
        """A plain TCP connection to the listener."""
        return socket.create_connection(self.address, timeout=timeout)


# Kept for the system tests, which call a started process a ``Proc``.
Proc = TunnelProcess


def spawn(
    command: list[str],
    out_path: Path,
    err_path: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with stdin closed and stdout/stderr in files (the same file if
    both paths are equal)."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(out_path.open("wb"))
        err = out if err_path == out_path else files.enter_context(err_path.open("wb"))
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )


def generation_line(n: int) -> str:
    """The log line (a regex) of a reload whose generation ``n`` serves."""
    return rf"reload: generation {n} serving"


def generation_pids(tunnel: Supervised, generation: int) -> set[int]:
    """The pids the log says were started for ``generation``."""
    found = re.findall(
        rf"worker \d+ started \(pid (\d+)\), generation {generation}\b", tunnel.log()
    )
    return {int(pid) for pid in found}


def served_by(tunnel: Supervised, pids: set[int], start: int) -> bool:
    """Whether a connection line from one of ``pids`` was logged after offset ``start``."""
    lines = re.findall(r"tunnel\[(\d+)\] INFO tunnel\.conn: conn ", tunnel.log()[start:])
    return any(int(pid) in pids for pid in lines)
