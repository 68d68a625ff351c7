"""``tunnel`` child processes: started with their output in files, stopped by PID.

* :class:`harness.process.TunnelProcess` (re-exported here) is one started process.
* :class:`Launcher` starts ``python -m tunnel ARGS`` (the system tests' ``tunnel``
  fixture); :func:`start_run` writes a one-listener config and serves it.
* :class:`TunnelFactory` writes an ini file with short timeouts and starts ``tunnel run``
  with one listener named ``test`` (the integration tests' ``start_tunnel`` fixture).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .certs import Certs
from .config import accept_address, pin_port, process_settings, render_config, write_config
from .net import port_accepts
from .process import Proc, Supervised, TunnelProcess, spawn
from .waits import wait_for

__all__ = [
    "REPO",
    "SRC",
    "Launcher",
    "Proc",
    "Running",
    "Supervised",
    "TunnelFactory",
    "TunnelProcess",
    "base_env",
    "spawn",
    "start_run",
]

# What a tunnel prints only when something crashed.
CRASH_MARKERS = ("Traceback", "ERROR: AddressSanitizer")

SRC = Path(__file__).resolve().parents[2] / "src"
REPO = SRC.parent


def base_env(home: Path) -> dict[str, str]:
    """A subprocess environment with HOME at ``home`` and ``src`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PYTHON"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tunnel_env() -> dict[str, str]:
    """The environment of a tunnel child: ours, its ``src`` first, and the library in
    ``TUNNEL_TEST_LD_PRELOAD`` preloaded into the tunnel only (CI's AddressSanitizer run:
    curl, openssl and the tests themselves stay uninstrumented)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    preload = os.environ.get("TUNNEL_TEST_LD_PRELOAD")
    if preload:
        env["LD_PRELOAD"] = preload
    return env


class Launcher:
    """Starts ``python -m tunnel ...`` processes and remembers them for teardown."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[TunnelProcess] = []
        self.tracebacks_expected = False  # set by a test that provokes one on purpose

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

    def check_logs(self) -> None:
        """Fail if a started process printed a traceback or an AddressSanitizer report.

        A crash that the supervisor survives (a worker restarted) or a traceback a test
        does not look for would otherwise pass unnoticed. A test that provokes one on
        purpose sets :attr:`tracebacks_expected`.
        """
        if self.tracebacks_expected:
            return
        for proc in self.procs:
            text = proc.stdout() + proc.stderr()
            for marker in CRASH_MARKERS:
                assert marker not in text, f"{marker!r} in the output of tunnel:\n{text[-3000:]}"


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
    pin_port(config, port)
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
            tunnel_env(),
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
        """Fail if any tunnel logged a traceback, lost a worker (a crash hidden by a
        restart would otherwise go unnoticed) or an AddressSanitizer report (one while
        stopping restarts nothing)."""
        markers = ("Traceback", "restarting in", "did not stop in time", "ERROR: AddressSanitizer")
        for proc in self.started:
            text = proc.log()
            for marker in markers:
                assert marker not in text, f"{marker!r} in the tunnel log:\n{text[-3000:]}"
