"""``tunnel`` child processes: started with their output in files, stopped by PID.

* :class:`TunnelProcess` is one started supervisor: its log, its workers (found through
  /proc), the addresses it bound (read from its ``listener NAME: ... ->`` log line, so
  listeners can say port 0), and :meth:`TunnelProcess.stop`, which ends it and every
  worker it ever had, by PID.
* :class:`Launcher` starts ``python -m tunnel ARGS`` (the system tests' ``tunnel``
  fixture); :func:`start_run` writes a one-listener config and serves it.
* :class:`TunnelFactory` writes an ini file with short timeouts and starts ``tunnel run``
  with one listener named ``test`` (the integration tests' ``start_tunnel`` fixture).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .certs import Certs
from .config import accept_address, process_settings, render_config, write_config
from .net import parse_host_port, port_accepts
from .procfs import alive, children
from .waits import DEADLINE, wait_for, wait_until

SRC = Path(__file__).resolve().parents[2] / "src"
REPO = SRC.parent

# "listener web: 127.0.0.1:41234, [::1]:41234 -> 127.0.0.1:8080" (the supervisor's line)
_LISTENER_LINE = r"listener {name}: ((?:\S+:\d+)(?:, \S+:\d+)*) -> "
_ADMIN_LINE = r"admin endpoint: (\S+:\d+)"


def base_env(home: Path) -> dict[str, str]:
    """A subprocess environment with HOME at ``home`` and ``src`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PYTHON"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TunnelProcess:
    """One started ``tunnel`` process (usually the supervisor) with its output in files.

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
        self.known_children: set[int] = set()
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
        """Everything the tunnel logged so far."""
        return self.stderr()

    def conn_lines(self) -> list[str]:
        """The per-connection summary lines logged so far."""
        return [line for line in self.log().splitlines() if " conn peer=" in line]

    def wait_log(self, pattern: str, timeout: float = DEADLINE, start: int = 0) -> re.Match[str]:
        """Wait for a regex to appear in the log (from offset ``start``); return the match.
        Fails at once if the process exits without logging it."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            exited = self.popen.poll() is not None
            match = re.search(pattern, self.stderr()[start:])
            if match:
                found.append(match)
            elif exited:
                pytest.fail(f"tunnel exited ({self.popen.returncode}):\n{self.stderr()}")
            return bool(match)

        wait_for(f"log line {pattern!r}", check, timeout)
        return found[0]

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
        return parse_host_port(self.wait_log(_ADMIN_LINE).group(1))[1]

    # -- processes -----------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        """The current worker process ids (children of the supervisor)."""
        pids = children(self.pid)
        self.known_children.update(pids)
        return pids

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the supervisor logged its start and every worker serves."""

        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"tunnel exited with {self.popen.returncode}:\n{self.log()}")
            text = self.log()
            return (
                "tunnel started" in text
                and len(self.worker_pids()) == self.workers
                and all(f"worker {i} started" in text for i in range(self.workers))
            )

        wait_until(ready, timeout, what="tunnel start")

    def signal(self, signo: int) -> None:
        """Send ``signo`` to the supervisor."""
        self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for exit; return the exit code."""
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """SIGTERM (drain for ``grace`` s), SIGTERM again, then SIGKILL whatever is left of
        the supervisor and every worker it had, by PID."""
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
        for pid in self.known_children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

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


class Launcher:
    """Starts ``python -m tunnel ...`` processes and remembers them for teardown."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[TunnelProcess] = []

    def start(self, *args: str) -> TunnelProcess:
        """Start ``tunnel ARGS`` in the background, output to files."""
        return self.start_command([sys.executable, "-m", "tunnel", *args])

    def start_command(self, command: list[str]) -> TunnelProcess:
        """Start ``command`` (which runs Tunnel) in the background, output to files."""
        index = len(self.procs)
        out_path = self.workdir / f"tunnel-{index}.out"
        err_path = self.workdir / f"tunnel-{index}.err"
        popen = spawn(command, out_path, err_path, self.env, self.workdir)
        proc = TunnelProcess(popen, out_path, err_path)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``tunnel ARGS`` to completion and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "tunnel", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        """Stop every started process."""
        for proc in self.procs:
            proc.stop()


@dataclass
class Running:
    """A started ``tunnel run`` and what it fronts."""

    proc: TunnelProcess
    port: int
    certs: Certs
    config: Path


def start_run(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend: Any, **settings: str
) -> Running:
    """Write a config (``[web]`` on port 0), start ``tunnel run``, read the port it bound
    and wait until that port accepts.

    The config file is then rewritten with that port, so that a test which edits and
    reloads it names the address that is actually served.
    """
    config = write_config(tmp_path / "tunnel.ini", certs, 0, backend.port, **settings)
    proc = tunnel.start("run", "-c", str(config))
    proc.wait_log(r"tunnel started")
    port = proc.bound_port("web")
    proc.port = port
    config.write_text(
        config.read_text().replace(f"accept = {accept_address()}", f"accept = 127.0.0.1:{port}")
    )
    wait_for(f"port {port} to accept", lambda: port_accepts(port))
    return Running(proc, port, certs, config)


def _limit_files(nofile: int) -> None:
    """In the child before exec: an open-files limit (soft and hard) of ``nofile``."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class TunnelFactory:
    """Starts ``tunnel run`` child processes and stops them all at the end of a test.

    ``factory(connect, workers=1, host=..., tunnel={...}, extra={...}, nofile=None,
    **listener)`` writes an ini file with short defaults (handshake and connect timeouts
    1 s, drain 1 s) and one listener, ``[test]``, on port 0 of ``host``; listener keys given
    as keyword arguments override the defaults (e.g. ``idle_timeout="1s"``; None drops a
    key), ``extra`` adds sections (e.g. ``{"backend:api": {"connect": ...}}``) and
    ``nofile`` sets an open-files limit for the tunnel process. It returns once every
    worker serves, with ``address`` set to what ``[test]`` bound.
    """

    def __init__(self, certs: Certs, directory: Path) -> None:
        self.certs = certs
        self.directory = directory
        self.started: list[TunnelProcess] = []

    def __call__(
        self,
        connect: str | list[str],
        *,
        workers: int = 1,
        host: str = "127.0.0.1",
        tunnel: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        nofile: int | None = None,
        **listener: Any,
    ) -> TunnelProcess:
        process = {"workers": workers, "drain_timeout": "1s", "allow_root": "yes"}
        sections = {
            "tunnel": process_settings(**(process | (tunnel or {}))),
            "test": {
                "accept": accept_address(host),
                "cert": self.certs.cert_pem,
                "key": self.certs.key_pem,
                "connect": connect,
                "handshake_timeout": "1s",
                "connect_timeout": "1s",
                "idle_timeout": "30s",
            }
            | listener,
            **(extra or {}),
        }
        index = len(self.started)
        config_path = self.directory / f"tunnel{index}.ini"
        config_path.write_text(render_config(sections))
        log_path = self.directory / f"tunnel{index}.log"
        popen = spawn(
            [sys.executable, "-m", "tunnel", "run", "-c", str(config_path)],
            log_path,
            log_path,
            {**os.environ, "PYTHONPATH": str(SRC)},
            preexec_fn=None if nofile is None else (lambda: _limit_files(nofile)),
        )
        proc = TunnelProcess(popen, log_path, log_path, workers=workers, grace=8.0)
        self.started.append(proc)
        proc.wait_ready()
        proc.host, proc.port = proc.bound("test")[0]
        return proc

    def stop_all(self) -> None:
        """Stop every tunnel this factory started."""
        for proc in self.started:
            proc.stop()

    def check_logs(self) -> None:
        """Fail if any tunnel logged a traceback or lost a worker (a crash hidden by a
        restart would otherwise go unnoticed)."""
        for proc in self.started:
            text = proc.log()
            for marker in ("Traceback", "restarting in", "did not stop in time"):
                assert marker not in text, f"{marker!r} in the tunnel log:\n{text[-3000:]}"
