"""Client mode (``client = yes``): plaintext clients, TLS to the backend; on both planes.

test_backend_tls.py has the original client-mode test (with the backend's key log, which
is compiled too); these run on the default (compiled) plane, or the one TUNNEL_DATAPLANE names.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from .harness import BackendFactory, Certs, TunnelFactory, recv_exactly, wait_until
from .tls_backends import (
    GREETING,
    REPLY,
    UPLOAD,
    greets_then_reads,
    on_plane,
    reads_then_replies,
    summary,
    tls_section,
)

pytestmark = pytest.mark.timeout(60)


def client_mode(start_tunnel: TunnelFactory, address: str, ca_file: Path) -> Any:
    section = tls_section(address, ca_file, sni="localhost")
    return start_tunnel(
        None, cert=None, key=None, client="yes", backend="remote", extra={"backend:remote": section}
    )


def test_plaintext_in_tls_out_half_close_and_a_large_reply(
    certs: Certs, ca_file: Path, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The client's FIN reaches the backend as close_notify; its reply and close_notify
    come back as bytes and a FIN; the log line has no TLS facts of the client side."""
    got: list[bytes] = []
    backend = start_backend(reads_then_replies(certs, got))
    tunnel = client_mode(start_tunnel, backend.address, ca_file)
    on_plane(tunnel)
    with socket.create_connection((tunnel.host, tunnel.port), timeout=10) as sock:
        sock.sendall(UPLOAD)
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock.recv, len(REPLY)) == REPLY
        assert sock.recv(10) == b""
    assert got == [UPLOAD]
    line = summary(tunnel)
    assert "sni=- alpn=- tls=- cipher=- resumed=no group=- ja4=-" in line, line
    assert f"backend={backend.address} in={len(UPLOAD)} out={len(REPLY)}" in line
    assert 'reason="done"' in line


def test_the_backend_ends_first_the_client_keeps_sending(
    certs: Certs, ca_file: Path, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    got: list[bytes] = []
    backend = start_backend(greets_then_reads(certs, got))
    tunnel = client_mode(start_tunnel, backend.address, ca_file)
    on_plane(tunnel)
    with socket.create_connection((tunnel.host, tunnel.port), timeout=10) as sock:
        assert recv_exactly(sock.recv, len(GREETING)) == GREETING
        assert sock.recv(10) == b""  # the backend's close_notify, as a FIN
        sock.sendall(UPLOAD)
        sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: got, what="the upload at the backend")
        assert sock.recv(10) == b""
    assert got == [UPLOAD]
    assert 'reason="done"' in summary(tunnel)


def test_an_unreachable_backend_closes_the_client(
    ca_file: Path, start_tunnel: TunnelFactory, unreachable: str
) -> None:
    tunnel = client_mode(start_tunnel, unreachable, ca_file)
    on_plane(tunnel)
    with socket.create_connection((tunnel.host, tunnel.port), timeout=10) as sock:
        assert sock.recv(10) == b""
    assert 'reason="backend unreachable: ' in summary(tunnel)
