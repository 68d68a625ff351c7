"""The harness's own promises that the other tests rely on."""

from __future__ import annotations

import errno
import socket

import pytest
from harness.net import refusing_address, reserve_port


def test_a_reserved_port_is_nobody_elses_until_the_session_ends() -> None:
    """reserve_port keeps the port bound: a plain bind fails, port 0 never hands it out,
    a connect is refused, and a listener with SO_REUSEADDR (what Tunnel, nginx and HAProxy
    set) may still serve there."""
    port = reserve_port()
    with socket.socket() as other, pytest.raises(OSError) as info:
        other.bind(("127.0.0.1", port))
    assert info.value.errno == errno.EADDRINUSE
    host, refused_port = refusing_address().rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(refused_port)), timeout=5).close()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_port_zero_never_hands_out_a_reserved_port() -> None:
    reserved = {reserve_port() for _ in range(20)}
    chosen = set()
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            chosen.add(sock.getsockname()[1])
    assert not reserved & chosen
