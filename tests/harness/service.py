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
from pathlib import Path
from typing import Any

from .certs import Certs
from .config import pin_port, write_config
from .net import port_accepts
from .process import Supervised, TunnelProcess
from .procfs import alive
from .tunnel import Launcher, Running
from .waits import DEADLINE, wait_for

MODES = ["foreground", "daemon"]


class Service(Supervised):
    """A started ``tunnel run`` (foreground or daemon) and what it fronts."""

    def __init__(
        self,
        mode: str,
        launched: TunnelProcess,
        pid: int,
        port: int,
        certs: Certs,
        config: Path,
        log_path: Path,
        pid_file: Path,
    ) -> None:
        self.mode = mode
        self.launched = launched  # in daemon mode it exits once detached
        self._pid = pid
        self.port = port
        self.certs = certs
        self.config = config
        self.log_path = log_path
        self.pid_file = pid_file
        self.known_children = set()

    @property
    def pid(self) -> int:
        """The supervisor (the daemon, not the process the test started)."""
        return self._pid

    @property
    def known_workers(self) -> set[int]:
        """Every worker pid seen so far."""
        return self.known_children

    @property
    def running(self) -> Running:
        """The same service as the ``Running`` the older helpers take (port and certs)."""
        return Running(self.launched, self.port, self.certs, self.config)

    def log(self) -> str:
        """Everything logged so far (the log file)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, start: int = 0, timeout: float = DEADLINE) -> re.Match[str]:
        """:meth:`wait_line` (with the argument order the service tests have always used)."""
        return self.wait_line(pattern, start=start, timeout=timeout)

    def gone(self) -> str | None:
        return None if alive(self.pid) else f"({self.mode}) exited"

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
        self.kill_workers()


def start_service(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    backend: Any,
    mode: str,
    started: list[Service],
    *,
    relative: bool = False,
    **settings: str,
) -> Service:
    """Write a config (``[web]`` on port 0), start ``tunnel run`` in ``mode``, read the
    port it bound and wait until that port accepts.

    ``relative``: name the file relative to the working directory (``tmp_path``). The
    service is appended to ``started`` at once, so a fixture can stop it whatever happens
    next. The config file is then rewritten with the bound port, so that a test which
    edits and reloads it names the address that is actually served.
    """
    log_path, pid_file = tmp_path / "tunnel.log", tmp_path / "tunnel.pid"
    settings = {
        "log_target": "file",
        "log_file": str(log_path),
        "pid_file": str(pid_file),
        "daemon": "yes" if mode == "daemon" else "no",
        **settings,
    }
    config = write_config(tmp_path / "tunnel.ini", certs, 0, backend.port, **settings)
    assert tunnel.workdir == tmp_path
    launched = tunnel.start("run", "-c", config.name if relative else str(config))
    if mode == "daemon":
        code = launched.wait(30)
        assert code == 0, launched.stderr()
    else:
        wait_for("the pid file", pid_file.exists)
    pid = int(pid_file.read_text())
    service = Service(mode, launched, pid, 0, certs, config, log_path, pid_file)
    started.append(service)
    service.wait_line(r"tunnel started")
    port = service.port = service.bound_port("web")
    pin_port(config, port)
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
