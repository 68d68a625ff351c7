"""``log_target = file``: logs go to the file; SIGUSR1 reopens it (logrotate)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import (
    Backend,
    Certs,
    Launcher,
    Running,
    free_port,
    port_accepts,
    wait_for,
    write_config,
)
from .test_reload import fetch

pytestmark = pytest.mark.timeout(90)


def test_sigusr1_reopens_log_file(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    log = tmp_path / "tunnel.log"
    running = start_run_with_file(tunnel, tmp_path, certs, hello_backend, log)
    fetch(running.port, certs.ca_pem)
    wait_for("a connection line in the log", lambda: "tunnel.conn: conn " in log.read_text())
    rotated = tmp_path / "tunnel.log.1"
    log.rename(rotated)
    running.proc.signal(signal.SIGUSR1)
    wait_for("the reopened log file", log.exists)
    # A worker's line (connection end) and a supervisor's line (reload) reach the new file.
    fetch(running.port, certs.ca_pem)
    wait_for("the worker writing to the new file", lambda: "tunnel.conn: conn " in log.read_text())
    running.proc.signal(signal.SIGHUP)
    wait_for("the supervisor writing there", lambda: "generation 2 serving" in log.read_text())
    assert "generation 2" not in rotated.read_text()
    assert running.proc.stderr() == ""


def start_run_with_file(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend: Backend, log: Path
) -> Running:
    """Like start_run, logging to ``log`` (so the start line is awaited there)."""
    port = free_port()
    settings = {"log_target": "file", "log_file": str(log)}
    config = write_config(tmp_path / "tunnel.ini", certs, port, backend.port, **settings)
    proc = tunnel.start("run", "-c", str(config))
    wait_for("the start line", lambda: log.exists() and "tunnel started" in log.read_text())
    wait_for(f"port {port} to accept", lambda: port_accepts(port))
    return Running(proc, port, certs, config)
