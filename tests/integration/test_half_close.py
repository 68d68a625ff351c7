"""Half-close both ways: backend FIN -> close_notify, client close_notify (or FIN) -> FIN."""

from __future__ import annotations

import socket

import pytest

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    ConnRecord,
    TunnelFactory,
    pattern,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

VERSIONS = ["1.2", "1.3"]
GREETING = b"greeting from the backend\n"
REPLY = pattern(3 * 1024 * 1024 + 17, 3)  # larger than every socket buffer on the way


def greet_then_half_close(record: ConnRecord) -> None:
    """Send a greeting, shut down writing (FIN), then keep reading until EOF."""
    record.sock.sendall(GREETING)
    record.sock.shutdown(socket.SHUT_WR)
    record.read_to_end()


def reply_after_eof(record: ConnRecord) -> None:
    """Read the request until EOF, then send the (large) reply and close."""
    record.read_to_end()
    if record.error is None:
        record.sock.sendall(REPLY)
    record.sock.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_fin_becomes_close_notify_client_keeps_sending(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The client gets close_notify for the backend's FIN, then still uploads 1 MiB."""
    backend = start_backend(greet_then_half_close)
    tunnel = start_tunnel(backend.address)
    sock = tunnel.connect(certs.client_context(version))
    assert recv_exactly(sock.recv, len(GREETING)) == GREETING
    # suppress_ragged_eofs is off: a bare FIN would raise SSLEOFError, an RST
    # ConnectionResetError; only a close_notify reads as b"".
    assert sock.recv(100) == b""
    upload = pattern(1024 * 1024, 5)
    for i in range(0, len(upload), 100_000):
        sock.sendall(upload[i : i + 100_000])
    (record,) = backend.wait_connections(1)
    wait_until(lambda: record.bytes_received == len(upload), what="upload at the backend")
    assert bytes(record.received) == upload
    assert not record.eof.is_set()
    sock.unwrap()  # our close_notify ends the other direction: the backend sees EOF
    wait_until(record.eof.is_set, what="backend EOF")
    sock.close()
    wait_until(lambda: 'reason="done"' in tunnel.log(), what="summary line")


@pytest.mark.parametrize("how", ["close_notify", "tcp_fin"])
@pytest.mark.parametrize("version", VERSIONS)
def test_client_close_becomes_fin_reply_still_delivered(
    version: str,
    how: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """After the client's close_notify (or TCP FIN) the backend sees EOF and its full
    reply still reaches the client, ended by a close_notify."""
    backend = start_backend(reply_after_eof)
    tunnel = start_tunnel(backend.address)
    client = BioClient(certs.client_context(version), tunnel.address)
    client.handshake()
    request = pattern(200_000, 9)
    client.send(request)
    if how == "close_notify":
        client.close_notify()
    else:
        client.sock.shutdown(socket.SHUT_WR)
    (record,) = backend.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    assert bytes(record.received) == request
    assert client.recv_all() == REPLY  # recv_all ends on close_notify, raises on a bare FIN
    client.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_request_and_close_notify_while_backend_connects(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    unreachable: str,
) -> None:
    """A request and close_notify sent while Tunnel is still connecting (the first backend
    hangs for connect_timeout) reach the second backend intact, then EOF; the reply
    comes back in full."""
    backend = start_backend(reply_after_eof)
    tunnel = start_tunnel([unreachable, backend.address], connect_timeout="500ms")
    client = BioClient(certs.client_context(version), tunnel.address)
    client.handshake()
    request = pattern(100_000, 4)
    client.send(request)
    client.close_notify()
    assert client.recv_all() == REPLY
    (record,) = backend.wait_connections(1)
    assert record.eof.is_set()
    assert bytes(record.received) == request
    client.close()
