"""Clients that do not speak TLS are closed promptly and nothing reaches the backend."""

from __future__ import annotations

import contextlib
import random

import pytest
from harness.net import read_until_closed
from harness.tunnel import TunnelProcess

from .support import Guard, close_reason

pytestmark = pytest.mark.timeout(60)


def _random_bytes() -> bytes:
    data = bytearray(random.Random(1).randbytes(4096))
    data[0] = 0x42  # not a TLS content type (nor SSLv2's high bit)
    return bytes(data)


GARBAGE = {
    "random": _random_bytes(),
    "zeros": bytes(4096),
    "ssh-banner": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\n",
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88\r\n\r\n",
    "tls-alert-first": b"\x15\x03\x03\x00\x02\x02\x28",  # fatal handshake_failure
    "flood-256k": b"\x42" + random.Random(2).randbytes(256 * 1024 - 1),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_not_tls_is_closed_promptly(name: str, shared: TunnelProcess, guard: Guard) -> None:
    """The handshake fails at once (not by the timeout), the socket is closed cleanly."""
    since = len(shared.conn_lines())
    with shared.raw() as sock:
        # Closed while we are still sending is fine for a flood.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(GARBAGE[name])
        _, how = read_until_closed(sock, timeout=10)
        assert how in ("eof", "reset"), f"still open: {how}"
        reason = close_reason(shared, sock, since)
    assert reason.startswith("handshake failed"), reason
    guard.check()
