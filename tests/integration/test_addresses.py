"""Address families: an IPv6 listener and a Unix-socket backend."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    echo_handler,
    has_ipv6_loopback,
    pattern,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")
def test_ipv6_listener(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """accept = [::1]:PORT serves clients over IPv6 and logs their address."""
    tunnel = start_tunnel(start_backend(echo_handler).address, host="::1")
    with tunnel.connect(certs.client_context()) as sock:
        assert sock.family == socket.AF_INET6
        data = pattern(100_000, 6)
        sock.sendall(data)
        assert recv_exactly(sock.recv, len(data)) == data
        sock.unwrap()
    wait_until(lambda: "peer=[::1]:" in tunnel.log(), what="IPv6 peer in the summary")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_unix_socket_backend(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """connect = unix:/path relays to a Unix-socket backend, half-close included."""
    backend = start_backend(echo_handler, unix_path=tmp_path / "backend.sock")
    tunnel = start_tunnel(backend.address)
    with tunnel.connect(certs.client_context(version)) as sock:
        data = pattern(300_000, 8)
        sock.sendall(data)
        assert recv_exactly(sock.recv, len(data)) == data
        sock.unwrap()  # the backend sees EOF, shuts down writing, we get close_notify
    (record,) = backend.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    wait_until(lambda: f"backend=unix:{tmp_path}" in tunnel.log(), what="summary line")
