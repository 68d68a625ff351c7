"""Handshake timeout (silent client, half a ClientHello) and idle timeout."""

from __future__ import annotations

import time

import pytest

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    TunnelFactory,
    echo_handler,
    parse_records,
    read_until_closed,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

ALERT = 21
FATAL_DECODE_ERROR = b"\x02\x32"  # what OpenSSL answers input that stops mid-handshake


def test_silent_client_closed_at_handshake_timeout(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A client that connects and sends nothing is closed after handshake_timeout (1 s),
    with a TLS alert (decode_error: its input stopped) before the FIN."""
    tunnel = start_tunnel(start_backend(echo_handler).address)
    with tunnel.raw() as sock:
        started = time.monotonic()
        data, how = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert how == "eof", how
    assert parse_records(data) == [(ALERT, FATAL_DECODE_ERROR)]
    assert 0.8 < elapsed < 3, elapsed
    wait_until(lambda: "handshake timeout" in tunnel.log(), what="summary line")


def test_half_client_hello_closed_at_handshake_timeout(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A client that sends half a ClientHello is closed after handshake_timeout (1 s)."""
    tunnel = start_tunnel(start_backend(echo_handler).address)
    client = BioClient(certs.client_context(), tunnel.address)
    hello = client.client_hello()
    client.sock.sendall(hello[: len(hello) // 2])
    started = time.monotonic()
    data, how = read_until_closed(client.sock, timeout=5)
    elapsed = time.monotonic() - started
    client.close()
    assert how == "eof", how
    # No ServerHello for half a ClientHello: the alert, then the FIN.
    assert parse_records(data) == [(ALERT, FATAL_DECODE_ERROR)]
    assert 0.8 < elapsed < 3, elapsed
    wait_until(lambda: "handshake timeout" in tunnel.log(), what="summary line")


def test_a_client_that_never_reads_is_let_go_after_the_linger(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The alert and FIN do not keep a connection open for a client that neither reads
    nor closes: after the linger period (2 s) the tunnel aborts its socket. (A client
    whose unread bytes still fill the tunnel's write buffer gets no alert at all, only
    the abort: see tests/unit/test_relay_memory.py.)"""
    tunnel = start_tunnel(start_backend(echo_handler).address)
    client = BioClient(certs.client_context(), tunnel.address)
    hello = client.client_hello()
    client.sock.sendall(hello[: len(hello) // 2])
    started = time.monotonic()
    try:
        line = wait_until(
            lambda: next((x for x in tunnel.conn_lines() if "handshake timeout" in x), None),
            timeout=10,
            what="the connection ended while the client still holds it",
        )
        elapsed = time.monotonic() - started
        assert 2.5 < elapsed < 6, elapsed  # handshake timeout (1 s) + linger (2 s)
        assert "tls=- cipher=-" in line
        data, _ = read_until_closed(client.sock, timeout=5)
        assert parse_records(data) == [(ALERT, FATAL_DECODE_ERROR)]
    finally:
        client.close()


def test_slow_but_steady_connection_outlives_handshake_timeout(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The handshake timer stops at the handshake: traffic after 1.5 s still flows."""
    tunnel = start_tunnel(start_backend(echo_handler).address, idle_timeout="1s")
    with tunnel.connect(certs.client_context()) as sock:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            sock.sendall(b"tick")
            assert recv_exactly(sock.recv, 4) == b"tick"
            time.sleep(0.1)  # pacing the traffic, not synchronisation
        sock.unwrap()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_idle_connection_gets_close_notify(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """An established connection with no traffic is closed with close_notify after
    idle_timeout (1 s)."""
    tunnel = start_tunnel(start_backend(echo_handler).address, idle_timeout="1s")
    with tunnel.connect(certs.client_context(version), timeout=5) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
        started = time.monotonic()
        assert sock.recv(100) == b""  # close_notify; a bare FIN or an RST would raise
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3, elapsed
    wait_until(lambda: "idle timeout" in tunnel.log(), what="summary line")
