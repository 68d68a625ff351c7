"""One handle on a running Tunnel whether it runs in the foreground or as a daemon.

Both modes log to a file (a daemon has no stderr), and both have a pid file, so a test
written against :class:`Service` runs the same operations in either mode: signals go to
the supervisor's pid, log lines are awaited in the file, workers are found through /proc.
A daemon is not the test's child: it is stopped by its pid (from the pid file) and its
workers by theirs, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import (
    Backend,
    Certs,
    Launcher,
    Proc,
    Running,
    alive,
    children_of,
    free_port,
    port_accepts,
    wait_for,
    write_config,
)

MODES = ["foreground", "daemon"]


@dataclass
class Service:
    """A started ``tunnel run`` (foreground or daemon) and what it fronts."""

    mode: str
    launched: Proc  # the process the test started (in daemon mode it exits once detached)
    pid: int  # the supervisor
    port: int
    certs: Certs
    config: Path
    log_path: Path
    pid_file: Path
    known_workers: set[int] = field(default_factory=set)

    @property
    def running(self) -> Running:
        """The same service as the ``Running`` the older helpers take (port and certs)."""
        return Running(self.launched, self.port, self.certs, self.config)

    def log(self) -> str:
        """Everything logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, start: int = 0, timeout: float = 15.0) -> re.Match[str]:
        """Wait for ``pattern`` in the log (from offset ``start``); return the match."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            match = re.search(pattern, self.log()[start:])
            if match:
                found.append(match)
                return True
            if not alive(self.pid):
                pytest.fail(f"tunnel ({self.mode}) exited:\n{self.log()}")
            return False

        wait_for(f"log line {pattern!r}", check, timeout)
        return found[0]

    def worker_pids(self) -> list[int]:
        """The supervisor's current children (its workers)."""
        pids = children_of(self.pid)
        self.known_workers.update(pids)
        return pids

    def signal(self, signo: int) -> None:
        """Send ``signo`` to the supervisor."""
        self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)

    def wait_exit(self, timeout: float = 20.0) -> None:
        """Wait until the supervisor has exited (a foreground one with status 0)."""
        if self.mode == "foreground":
            assert self.launched.wait(timeout) == 0, self.log()
        else:
            wait_for("the daemon to exit", lambda: not alive(self.pid), timeout)

    def stop(self) -> None:
        """Stop the supervisor without draining, then any worker left, by pid."""
        self.worker_pids()
        if alive(self.pid):
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGTERM)
            with contextlib.suppress(BaseException):
                wait_for("tunnel to stop", lambda: not alive(self.pid), 10.0)
            if alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        for pid in self.known_workers:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_service(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    backend: Backend,
    mode: str,
    started: list[Service],
    *,
    relative: bool = False,
    **settings: str,
) -> Service:
    """Write a config, start ``tunnel run`` in ``mode``, wait until its port accepts.

    ``relative``: name the file relative to the working directory (``tmp_path``). The
    service is appended to ``started`` at once, so a fixture can stop it whatever happens
    next.
    """
    port = free_port()
    log_path, pid_file = tmp_path / "tunnel.log", tmp_path / "tunnel.pid"
    settings = {
        "log_target": "file",
        "log_file": str(log_path),
        "pid_file": str(pid_file),
        "daemon": "yes" if mode == "daemon" else "no",
        **settings,
    }
    config = write_config(tmp_path / "tunnel.ini", certs, port, backend.port, **settings)
    assert tunnel.workdir == tmp_path
    launched = tunnel.start("run", "-c", config.name if relative else str(config))
    if mode == "daemon":
        code = launched.wait(30)
        assert code == 0, launched.stderr()
    else:
        wait_for("the pid file", pid_file.exists)
    pid = int(pid_file.read_text())
    service = Service(mode, launched, pid, port, certs, config, log_path, pid_file)
    started.append(service)
    service.wait_log(r"tunnel started")
    wait_for(f"port {port} to accept", lambda: port_accepts(port))
    return service


@contextlib.contextmanager
def stopping_all() -> Iterator[list[Service]]:
    """A list to register services in; every one is stopped at the end."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in started:
            service.stop()
