"""Backend refused, reset or unreachable: a clean TLS close; failover; client aborts."""

from __future__ import annotations

import ssl
import time

import pytest

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    abort,
    echo_handler,
    pattern,
    recording_handler,
    recv_exactly,
    refusing_address,
    reset_handler,
    sender_handler,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

VERSIONS = ["1.2", "1.3"]


def assert_clean_tls_close(sock: ssl.SSLSocket) -> None:
    """The server ended the connection with close_notify (not a bare FIN or an RST)."""
    assert sock.recv(100) == b""  # raises SSLEOFError / ConnectionResetError otherwise


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_refused(version: str, certs: Certs, start_tunnel: TunnelFactory) -> None:
    """Nothing listens at the backend: the client gets close_notify."""
    tunnel = start_tunnel(refusing_address())
    with tunnel.connect(certs.client_context(version), timeout=5) as sock:
        assert_clean_tls_close(sock)
    wait_until(lambda: "backend unreachable" in tunnel.log(), what="summary line")


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_resets(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The backend accepts, then resets: the client gets close_notify."""
    backend = start_backend(reset_handler)
    tunnel = start_tunnel(backend.address)
    with tunnel.connect(certs.client_context(version), timeout=5) as sock:
        sock.sendall(b"hello")
        assert_clean_tls_close(sock)
    backend.wait_connections(1)


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_unreachable_times_out(
    version: str, certs: Certs, start_tunnel: TunnelFactory, unreachable: str
) -> None:
    """The backend's connect hangs: after connect_timeout the client gets close_notify."""
    tunnel = start_tunnel(unreachable, connect_timeout="500ms")
    with tunnel.connect(certs.client_context(version), timeout=5) as sock:
        started = time.monotonic()
        assert_clean_tls_close(sock)
        assert 0.3 < time.monotonic() - started < 3
    wait_until(lambda: "connect timed out" in tunnel.log(), what="summary line")


@pytest.mark.parametrize("first", ["refused", "timeout"])
def test_failover_to_second_backend(
    first: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    unreachable: str,
) -> None:
    """The first backend refuses (or times out): the second one serves the client."""
    backend = start_backend(echo_handler)
    dead = refusing_address() if first == "refused" else unreachable
    tunnel = start_tunnel([dead, backend.address], connect_timeout="500ms")
    with tunnel.connect(certs.client_context(), timeout=5) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
        sock.unwrap()
    backend.wait_connections(1)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_abort_during_upload_releases_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A client RST mid-upload: the backend connection ends at once."""
    backend = start_backend(recording_handler)
    tunnel = start_tunnel(backend.address)
    sock = tunnel.connect(certs.client_context(version))
    sock.sendall(pattern(1024 * 1024, 1))
    (record,) = backend.wait_connections(1)
    wait_until(lambda: record.bytes_received > 0, what="upload at the backend")
    aborted = time.monotonic()
    abort(sock)
    wait_until(lambda: record.ended_at is not None, timeout=3, what="backend connection end")
    assert record.ended_at is not None and record.ended_at - aborted < 1.0


@pytest.mark.parametrize("version", VERSIONS)
def test_client_abort_during_download_releases_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A client RST mid-download: the sending backend gets an error at once."""
    backend = start_backend(sender_handler)
    tunnel = start_tunnel(backend.address)
    sock = tunnel.connect(certs.client_context(version))
    recv_exactly(sock.recv, 1024 * 1024)
    (record,) = backend.wait_connections(1)
    aborted = time.monotonic()
    abort(sock)
    wait_until(lambda: record.ended_at is not None, timeout=3, what="backend connection end")
    assert isinstance(record.error, OSError), record.error  # reset / broken pipe, no block
    assert record.ended_at is not None and record.ended_at - aborted < 1.0


def test_client_abort_while_backend_connects(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory, unreachable: str
) -> None:
    """A client that leaves while the backend connect hangs is cleaned up: the pending
    connect is abandoned (the failover backend never sees a connection)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel([unreachable, backend.address], connect_timeout="500ms")
    # TLS 1.2: the server's Finished comes last, so once the client's handshake is done
    # the server's is too, and Tunnel is connecting to the (hanging) first backend.
    sock = tunnel.connect(certs.client_context("1.2"))
    abort(sock)
    wait_until(lambda: len(tunnel.conn_lines()) == 1, what="summary line")
    assert "client error" in tunnel.conn_lines()[0]
    with tunnel.connect(certs.client_context()) as other:  # the worker still serves
        other.sendall(b"ping")
        assert recv_exactly(other.recv, 4) == b"ping"
    assert len(backend.records) == 1  # only the second client's connection
