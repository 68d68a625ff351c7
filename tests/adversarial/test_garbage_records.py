"""Garbage, truncated and oversized records and ClientHellos, before and after the
handshake: each connection ends (alert or close), nothing of it reaches the backend, and
normal clients are served meanwhile. With the default build this runs through the
compiled data plane (tests/integration/test_dataplane.py checks that it is used)."""

from __future__ import annotations

import contextlib
import random
import socket
import struct

import pytest
from integration.harness import (
    HANDSHAKE,
    Backend,
    BioClient,
    Certs,
    TunnelProcess,
    read_until_closed,
    recv_exactly,
    wait_until,
)

from .support import Guard, close_reason, tagged

pytestmark = pytest.mark.timeout(60)


def _ends(sock: socket.socket) -> str:
    _data, how = read_until_closed(sock, timeout=10)
    assert how in ("eof", "reset"), f"connection still open ({how})"
    return how


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_as_client_hello(
    seed: int, certs: Certs, shared: TunnelProcess, guard: Guard
) -> None:
    """Random bytes, some dressed as a handshake record header, then FIN."""
    rng = random.Random(seed)
    body = rng.randbytes(rng.choice([1, 5, 300, 17000, 70000]))
    if seed % 2:
        body = bytes([HANDSHAKE, 3, 1]) + struct.pack(">H", len(body) & 0xFFFF) + body
    since = len(shared.conn_lines())
    with socket.create_connection(shared.address, timeout=10) as sock:
        try:
            sock.sendall(body)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the tunnel may already have given up on us
        _ends(sock)
        reason = close_reason(shared, sock, since)
    assert reason.startswith(("handshake failed", "client closed during", "client error")), reason
    guard.check()


@pytest.mark.parametrize("cut", [1, 5, 9, 40])
def test_client_hello_cut_then_fin(
    cut: int, certs: Certs, shared: TunnelProcess, guard: Guard
) -> None:
    """A real ClientHello cut after ``cut`` bytes, then FIN: the handshake fails."""
    client = BioClient(certs.client_context(), shared.address)
    since = len(shared.conn_lines())
    client.sock.sendall(client.client_hello()[:cut])
    client.sock.shutdown(socket.SHUT_WR)
    _ends(client.sock)
    assert close_reason(shared, client.sock, since).startswith(
        ("client closed during handshake", "handshake failed")
    )
    client.close()
    guard.check()


def test_client_hello_claiming_a_huge_message(
    certs: Certs, shared: TunnelProcess, guard: Guard
) -> None:
    """A handshake message claiming 16 MiB, spread over full records: refused, not buffered."""
    client = BioClient(certs.client_context(), shared.address)
    since = len(shared.conn_lines())
    message = bytes([1]) + (0xFFFFFF).to_bytes(3, "big") + bytes(16380)
    records = b"".join(
        bytes([HANDSHAKE, 3, 1]) + struct.pack(">H", 16384) + (message if i == 0 else bytes(16384))
        for i in range(8)
    )
    with contextlib.suppress(OSError):
        client.sock.sendall(records)
    _ends(client.sock)
    assert close_reason(shared, client.sock, since).startswith("handshake failed")
    client.close()
    guard.check()


@pytest.mark.parametrize(
    "garbage",
    [
        bytes([0x17, 3, 3, 0xFF, 0xFF]) + bytes(1000),  # longer than any record may be
        bytes([0x17, 3, 3, 0x00, 0x40]) + bytes(10),  # truncated, then FIN
        bytes([0x99, 3, 3, 0x00, 0x10]) + bytes(16),  # unknown content type
        bytes(range(256)) * 8,  # noise
    ],
    ids=["oversized", "truncated", "bad-type", "noise"],
)
def test_garbage_after_the_handshake(
    garbage: bytes, certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    """Relaying: a broken record ends the connection; its bytes never reach the backend."""
    tag = f"echo garbage-{garbage[:2].hex()}-{len(garbage)}"
    client = BioClient(certs.client_context(), shared.address)
    client.handshake()
    client.send(f"{tag}\nping".encode())
    assert recv_exactly(client.recv, 4) == b"ping"
    since = len(shared.conn_lines())
    client.sock.sendall(garbage + b"SECRET")
    client.sock.shutdown(socket.SHUT_WR)
    _ends(client.sock)
    reason = close_reason(shared, client.sock, since)
    assert reason.startswith(("TLS error from client", "client closed", "done")), reason
    client.close()
    seen = tagged(backend, tag)
    wait_until(seen.done.is_set, 10, what="backend connection released")
    assert b"SECRET" not in seen.received
    guard.check(extra_backend_conns=1)
