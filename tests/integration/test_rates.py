"""Per-IP rates shared by the workers: the configured rate is what a client gets.

Every test runs 2 workers; the kernel spreads one host's connections over both (checked
from the log lines' worker pids), and the shared table still admits exactly the burst.
The buckets are slow (``1/h``) where exact counts are asserted, so that no token comes
back during the test and no sleep or timing is involved.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest
from harness.admin import scrape, value

from tunnel.wire import proxy_protocol as pp

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    expect_plane,
    read_until_closed,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

CONN_LINE = re.compile(r"tunnel\[(\d+)\] INFO tunnel\.conn: conn peer=")


def attempt(
    tunnel: TunnelProcess, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool] | None:
    """One TLS connection with an echo: its session if served, None if refused."""
    raw = socket.create_connection(tunnel.address, timeout=10)
    try:
        sock = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except (ssl.SSLError, ConnectionError):
        raw.close()
        return None
    with sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
        return sock.session, sock.session_reused


def served_by(tunnel: TunnelProcess) -> set[str]:
    return {m.group(1) for m in map(CONN_LINE.search, tunnel.log().splitlines()) if m}


def test_connection_rate_holds_across_two_workers(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        workers=2,
        tunnel={"admin": "127.0.0.1:0"},
        max_connection_rate_per_ip="1/h burst 10",
    )
    admin = tunnel.admin_port()  # admin says port 0
    expect_plane(tunnel)
    ctx = certs.client_context()
    results = [attempt(tunnel, ctx) for _ in range(40)]
    served = sum(result is not None for result in results)
    assert served == 10  # per-worker buckets would have let up to 20 through
    wait_until(lambda: len(tunnel.conn_lines()) >= 10, what="the served connections' lines")
    assert len(served_by(tunnel)) == 2, "both workers should have served connections"

    def counted() -> dict[object, float] | None:
        samples = scrape(admin)
        n = value(
            samples, "tunnel_connections_refused_rate_total", listener="test", kind="connection"
        )
        return samples if n == 30 else None

    samples = wait_until(counted, timeout=20, interval=0.2, what="refusals in /metrics")
    assert value(samples, "tunnel_connections_accepted_total", listener="test") == 10
    # The refusals' summary is written once a second: waited for, not assumed.
    summary = wait_until(
        lambda: re.findall(r"refused (\d+) connection\(s\) over the per-IP rates", tunnel.log()),
        what="the refusals' summary line",
    )
    assert sum(map(int, summary)) <= 30
    # Another address has its own bucket.
    raw = socket.create_connection(tunnel.address, timeout=10, source_address=("127.0.0.2", 0))
    with ctx.wrap_socket(raw, server_hostname="localhost") as other:
        other.sendall(b"ping")
        assert recv_exactly(other.recv, 4) == b"ping"


def test_refused_before_tls(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, workers=2, max_connection_rate_per_ip="1/h burst 1")
    expect_plane(tunnel)
    assert attempt(tunnel, certs.client_context()) is not None
    client = BioClient(certs.client_context(), tunnel.address)
    with client.sock as sock:
        sock.sendall(client.client_hello())
        data, how = read_until_closed(sock, timeout=10)
    assert (data, how in ("reset", "eof")) == (b"", True)


def test_handshake_rate_counts_full_handshakes_only(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, workers=2, max_handshake_rate_per_ip="1/h burst 3")
    expect_plane(tunnel)
    ctx = certs.client_context("1.2")  # TLS 1.2: the session exists once the handshake is done
    first = attempt(tunnel, ctx)
    assert first is not None
    session = first[0]
    assert session is not None
    resumed = [attempt(tunnel, ctx, session) for _ in range(6)]  # whichever worker: shared keys
    assert all(r is not None and r[1] for r in resumed), resumed
    full = [attempt(tunnel, ctx) for _ in range(4)]
    assert [r is not None for r in full] == [True, True, False, False]
    resumed_again = attempt(tunnel, ctx, session)  # resuming is refused too now: no token
    assert resumed_again is None


def test_proxy_from_counts_the_header_address(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        workers=2,
        proxy_from="127.0.0.0/8",
        max_connection_rate_per_ip="1/h burst 2",
    )
    expect_plane(tunnel)  # PROXY in and the rates, both compiled

    def through_balancer(client_ip: str) -> bool:
        client = BioClient(certs.client_context(), tunnel.address)
        header = pp.encode_v1((client_ip, 4000), ("192.0.2.1", 443))
        client.sock.sendall(header + client.client_hello())
        try:
            client.handshake()
        except (ssl.SSLError, OSError):
            return False
        finally:
            client.close()
        return True

    assert [through_balancer("203.0.113.5") for _ in range(3)] == [True, True, False]
    assert through_balancer("203.0.113.6")  # the balancer's own address is not the key
    summary = "refused 1 connection(s) over the per-IP rates"
    wait_until(lambda: summary in tunnel.log(), what="the refusals' summary line")
    assert "from 203.0.113.5 (1)" in tunnel.log()
    assert 'reason="rate limited"' not in tunnel.log()  # no line per refusal: a flood's size


def test_measured_rate_with_two_workers(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """20/s burst 20 hammered for ~2 s by one host: never more than burst + rate x time."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, workers=2, max_connection_rate_per_ip="20/s burst 20")
    ctx = certs.client_context()
    served = attempts = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        attempts += 1
        served += attempt(tunnel, ctx) is not None
    elapsed = time.monotonic() - started
    print(f"  shared rate, 2 workers: {served} of {attempts} served in {elapsed:.2f} s")
    assert served <= 20 + 20 * elapsed + 1
    assert served > 20  # the burst, then some refill
