"""The worker's loop when every listener is compiled: it waits in the plane's epoll set.

Such a worker (:mod:`tunnel.dataplane.oneloop`) must run a wake-up with only data-plane
events in C: its DEBUG line at exit counts the epoll waits and the returns to Python, and
keep-alive requests must not add returns. Signals reach it through asyncio's self-pipe,
watched in the same epoll set: SIGUSR1 (log file reopened), SIGHUP (reload: the old worker
drains and ends when its last connection does, which C tells the loop through its ready
queue), SIGTERM (drain and exit). On the Python plane the worker keeps uvloop.
"""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from harness.config import accept_address, process_settings
from harness.process import generation_line
from harness.tunnel import tunnel_env

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    TunnelProcess,
    compiled_run,
    echo_handler,
    recv_exactly,
    render_config,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

LOOP_LINE = "event loop: the compiled plane's epoll set"
COUNTS = re.compile(r"tunnel\[(\d+)\] DEBUG tunnel\.worker: event loop: (\d+) epoll waits, (\d+) ")
REQUESTS = 400


def echo(sock: ssl.SSLSocket, size: int = 100) -> None:
    data = bytes(range(size % 256)) * (size // 256) + bytes(size % 256)
    sock.sendall(data)
    assert recv_exactly(sock.recv, len(data)) == data


def test_keepalive_requests_stay_in_c(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Fails if the compiled-only worker's loop returns to Python per data-plane event."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, tunnel={"log_level": "debug"})
    with tunnel.connect(certs.client_context("1.3")) as sock:
        for _ in range(REQUESTS):
            echo(sock)
    tunnel.stop()
    log = tunnel.log()
    if not compiled_run():
        assert LOOP_LINE not in log and not COUNTS.search(log), log
        return
    assert LOOP_LINE in log, log
    found = COUNTS.search(log)
    assert found, log
    waits, returns = int(found[2]), int(found[3])
    # Each request wakes the plane at least once (the client's bytes, the backend's answer);
    # Python is woken by its timers (a statistics report a second) and a connection's
    # start and end, not by requests.
    assert waits >= REQUESTS, (waits, returns)
    assert returns < REQUESTS // 4, (waits, returns)


def start_logging_to_file(tmp_path: Path, certs: Certs, backend: str) -> TunnelProcess:
    """One worker logging to ``tunnel.log`` (the file SIGUSR1 reopens), DEBUG."""
    log_file = tmp_path / "tunnel.log"
    tunnel = {"log_level": "debug", "log_target": "file", "log_file": str(log_file)}
    sections = {
        "tunnel": process_settings(**tunnel, drain_timeout="60s", allow_root="yes"),
        "test": {
            "accept": accept_address(),
            "cert": certs.cert_pem,
            "key": certs.key_pem,
            "connect": backend,
            "idle_timeout": "60s",
        },
    }
    config = tmp_path / "tunnel.ini"
    config.write_text(render_config(sections))
    out = tmp_path / "stdout"
    with out.open("wb") as stdout:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tunnel", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=tunnel_env(),
        )
    proc = TunnelProcess(popen, out, log_file, grace=8.0)
    wait_until(log_file.exists, 10, what="the log file")
    proc.wait_ready()
    proc.host, proc.port = proc.bound("test")[0]
    return proc


def test_signals_reach_a_worker_waiting_in_the_plane(
    tmp_path: Path, certs: Certs, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_logging_to_file(tmp_path, certs, backend.address)
    ctx = certs.client_context()
    try:
        assert (LOOP_LINE in tunnel.log()) == compiled_run(), tunnel.log()
        old = tunnel.worker_pids()
        kept = tunnel.connect(ctx)
        echo(kept)
        # SIGUSR1: the supervisor passes it on; the worker's next lines go to the new file.
        tunnel.log_path.rename(tmp_path / "tunnel.log.1")
        tunnel.signal(signal.SIGUSR1)
        wait_until(tunnel.log_path.exists, 10, what="the reopened log file")

        def worker_wrote_there() -> bool:
            with tunnel.connect(ctx) as sock:
                echo(sock)
            return "tunnel.conn: conn " in tunnel.log()

        wait_until(worker_wrote_there, 10, what="a connection line in the new file")
        # SIGHUP: a new generation; the old worker drains, serving the kept connection.
        tunnel.signal(signal.SIGHUP)
        tunnel.wait_log(generation_line(2))
        for _ in range(20):
            echo(kept)
        kept.close()  # its end ends the old worker's drain (not the 60 s drain_timeout)
        tunnel.wait_log(r"old worker \(pid \d+\) finished draining", timeout=20)
        with tunnel.connect(ctx) as sock:
            echo(sock)
        # SIGTERM: drain (nothing open) and exit.
        tunnel.signal(signal.SIGTERM)
        assert tunnel.wait(20) == 0
        if compiled_run():
            ended = {int(found[1]) for found in COUNTS.finditer(tunnel.log())}
            assert set(old) <= ended, tunnel.log()
    finally:
        tunnel.stop()
