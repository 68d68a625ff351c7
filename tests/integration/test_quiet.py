"""``log_connections = no``: no summary line per connection, the same metrics.

With the lines off, the compiled plane serves a simple listener's connections without a
call into Python (``fastplane_quiet.py``, ``csrc/fp_quiet.c``): C counts what the calls
would have counted. These tests check that ``/metrics`` says the same with and without the
lines (on both planes), that the compiled plane did serve them quietly
(``TUNNEL_DEBUG_QUIET``), that a backend that fails is counted and the quiet path comes
back once it is up, and that a drain still ends with its last quiet connection.
"""

from __future__ import annotations

import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness.admin import scrape, value
from harness.net import reserve_port

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    TunnelProcess,
    compiled_run,
    echo_handler,
    pattern,
    read_until_closed,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

SIZES = (1, 20_000, 300_001)
SUMMARY = "tunnel.conn: conn "
COMPARED = (  # every sample of these families must match, labels and all
    "tunnel_connections_accepted_total",
    "tunnel_connections_closed_total",
    "tunnel_handshakes_total",
    "tunnel_tls_negotiated_total",
    "tunnel_bytes_total",
    "tunnel_backend_connects_total",
    "tunnel_handshake_duration_seconds_count",
    "tunnel_backend_connect_duration_seconds_count",
)


def served(path: Path) -> int:
    """Connections the workers served quietly (their TUNNEL_DEBUG_QUIET lines)."""
    if not path.exists():
        return 0
    return sum(int(line.split()[2]) for line in path.read_text().splitlines())


def echo_traffic(tunnel: TunnelProcess, ctx: ssl.SSLContext) -> None:
    for size in SIZES:
        with tunnel.connect(ctx) as sock:
            data = pattern(size, size)
            sock.sendall(data)
            assert recv_exactly(sock.recv, size) == data
            sock.unwrap()
    with tunnel.raw() as sock:  # not TLS: a handshake failure
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        read_until_closed(sock)


def compared(samples: dict[Any, float]) -> dict[Any, float]:
    return {key: n for key, n in samples.items() if key[0] in COMPARED and n}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_metrics_are_the_same_without_the_lines(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = start_backend(echo_handler)
    results = {}
    for lines in ("yes", "no"):
        debug = tmp_path / f"quiet-{lines}"
        monkeypatch.setenv("TUNNEL_DEBUG_QUIET", str(debug))
        settings = {"admin": "127.0.0.1:0", "log_connections": lines}
        tunnel = start_tunnel(backend.address, tunnel=settings)
        admin = tunnel.admin_port()
        echo_traffic(tunnel, certs.client_context(version))

        def settled(port: int = admin) -> dict[Any, float] | None:
            samples = scrape(port)
            done = value(samples, "tunnel_connections_closed_total", listener="test", reason="done")
            return samples if done == len(SIZES) else None

        samples = wait_until(settled, timeout=20, interval=0.2, what="metrics of the traffic")
        results[lines] = compared(samples)
        tunnel.stop()
        logged = tunnel.log().count(SUMMARY)
        assert logged == (len(SIZES) + 1 if lines == "yes" else 0), tunnel.log()
        # Quiet: the echoes (the failed handshake never reached handshake-done).
        expected = len(SIZES) if lines == "no" and compiled_run() else 0
        assert served(debug) == expected
    assert results["yes"] == results["no"]
    assert value(results["no"], "tunnel_handshakes_total", listener="test", result="ok") == 3
    assert value(results["no"], "tunnel_backend_connects_total", backend=backend.address) == 3


def serve_echo(sock: socket.socket, stop: threading.Event) -> None:
    """Accept and echo until ``stop`` (the reserved port, listened on late)."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(10)
            while data := conn.recv(65536):
                conn.sendall(data)


def echo_once(tunnel: TunnelProcess, ctx: ssl.SSLContext) -> None:
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
        sock.unwrap()


def test_a_failed_backend_is_counted_and_the_quiet_path_comes_back(
    certs: Certs, start_tunnel: TunnelFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = reserve_port()  # refused until we listen on it
    debug = tmp_path / "quiet"
    monkeypatch.setenv("TUNNEL_DEBUG_QUIET", str(debug))
    address = f"127.0.0.1:{port}"
    settings = {"admin": "127.0.0.1:0", "log_connections": "no"}
    tunnel = start_tunnel(address, tunnel=settings)
    admin = tunnel.admin_port()
    ctx = certs.client_context("1.3")
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"ping")
        assert read_until_closed(sock)[0] == b""  # refused: the client is closed
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(16)
    stop = threading.Event()
    thread = threading.Thread(target=serve_echo, args=(listening, stop), daemon=True)
    thread.start()
    try:
        for rounds in (2, 4):
            for _ in range(2):
                echo_once(tunnel, ctx)

            def counted(n: int = rounds) -> dict[Any, float] | None:
                samples = scrape(admin)
                done = value(samples, "tunnel_backend_connects_total", backend=address)
                return samples if done == n else None

            samples = wait_until(counted, timeout=20, interval=0.2, what="connects counted")
        unreachable = value(
            samples,
            "tunnel_connections_closed_total",
            listener="test",
            reason="backend unreachable",
        )
        assert unreachable == 1
        failures = "tunnel_backend_connect_failures_total"
        assert value(samples, failures, backend=address, kind="refused") == 1
        closed = "tunnel_connections_closed_total"
        wait_until(
            lambda: value(scrape(admin), closed, listener="test", reason="done") == 4,
            timeout=20,
            what="closes counted",
        )
        tunnel.stop()
    finally:
        stop.set()
        thread.join(5)
        listening.close()
    # The refused one (quiet until its connect failed) and the two after the metrics
    # showed the member up again; the two in between may go either way.
    if compiled_run():
        assert 3 <= served(debug) <= 5


def test_a_drain_ends_with_its_last_quiet_connection(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    settings = {"log_connections": "no", "drain_timeout": "30s"}
    tunnel = start_tunnel(backend.address, tunnel=settings)
    sock = tunnel.connect(certs.client_context("1.3"))
    sock.sendall(b"before")
    assert recv_exactly(sock.recv, 6) == b"before"
    tunnel.signal(signal.SIGTERM)
    wait_until(lambda: "drain" in tunnel.log(), timeout=10, what="the drain")
    sock.sendall(b"during")  # the connection is served on while the worker drains
    assert recv_exactly(sock.recv, 6) == b"during"
    sock.unwrap()
    sock.close()
    start = time.monotonic()
    assert tunnel.wait(timeout=20) == 0
    assert time.monotonic() - start < 15  # the drain ended with it, not at drain_timeout
