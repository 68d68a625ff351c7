"""Per-client-IP limit end to end: ``max_connections_per_ip = 3`` on a live tunnel.

One host (127.0.0.1) holding its 3 connections is refused a 4th at once, before any TLS
byte, while another host (a client socket bound to 127.0.0.2) is still served; when one
of the 3 goes, the host gets a slot again; a flood of 200 refused attempts gives a few
summary log lines (at most one per second), not 200; no refused connection reaches the
backend.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest
from harness.backends import Backend, BackendFactory
from harness.certs import Certs
from harness.net import read_until_closed, recv_exactly
from harness.tunnel import TunnelFactory, TunnelProcess
from harness.waits import wait_until

from .support import dispatch_handler, strays

pytestmark = pytest.mark.timeout(90)

LIMIT = 3
FLOOD = 200
FLOOD_SECONDS = 3.0
SUMMARY = re.compile(
    r"^(\S+ \S+) .*listener test: refused (\d+) connection\(s\) over the per-IP limits"
)


def connect_from(
    tunnel: TunnelProcess, source: str, ctx: ssl.SSLContext, timeout: float = 10.0
) -> ssl.SSLSocket:
    """A TLS client whose socket is bound to ``source`` (any 127/8 address works)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    raw.bind((source, 0))
    raw.connect(tunnel.address)
    return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def raw_from(tunnel: TunnelProcess, source: str) -> socket.socket:
    return socket.create_connection(tunnel.address, timeout=10, source_address=(source, 0))


def echo(sock: ssl.SSLSocket, name: str) -> None:
    sock.sendall(f"echo {name}\n".encode() + b"ping")
    assert recv_exactly(sock.recv, 4) == b"ping"


def assert_refused_without_tls(sock: socket.socket) -> None:
    """Closed by the tunnel with not a byte sent (the refusal is an RST)."""
    data, how = read_until_closed(sock, timeout=10)
    assert how in ("reset", "eof"), f"not refused: {how}"
    assert data == b"", data[:32]


def summary_lines(tunnel: TunnelProcess) -> list[tuple[str, int]]:
    """(timestamp, refused count) of each refusal summary line."""
    found = []
    for line in tunnel.log().splitlines():
        match = SUMMARY.match(line)
        if match:
            found.append((match.group(1), int(match.group(2))))
    return found


@pytest.fixture
def limited(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> tuple[TunnelProcess, Backend]:
    backend = start_backend(dispatch_handler)
    tunnel = start_tunnel(
        backend.address, workers=1, max_connections_per_ip=LIMIT, handshake_timeout="10s"
    )
    return tunnel, backend


def test_fourth_connection_refused_other_host_served(
    certs: Certs, limited: tuple[TunnelProcess, Backend]
) -> None:
    tunnel, backend = limited
    ctx = certs.client_context()
    held = [connect_from(tunnel, "127.0.0.1", ctx) for _ in range(LIMIT)]
    for i, sock in enumerate(held):
        echo(sock, f"held-{i}")

    with raw_from(tunnel, "127.0.0.1") as fourth:
        assert_refused_without_tls(fourth)
    with connect_from(tunnel, "127.0.0.2", ctx) as other:
        echo(other, "other-host")

    held.pop().close()

    def a_slot_again() -> ssl.SSLSocket | None:
        try:
            sock = connect_from(tunnel, "127.0.0.1", ctx)
        except (ssl.SSLError, OSError):
            return None  # the tunnel has not seen the close yet: refused, try again
        return sock

    again = wait_until(a_slot_again, 10, interval=0.1, what="a slot for 127.0.0.1 again")
    echo(again, "after-close")
    held.append(again)

    # A flood from the same host: every attempt refused, a few summary lines at most.
    before = sum(n for _, n in summary_lines(tunnel))
    started = time.monotonic()
    for i in range(FLOOD):
        with raw_from(tunnel, "127.0.0.1") as sock:
            assert_refused_without_tls(sock)
        # Pacing, not synchronisation: spread the flood over a few seconds so that the
        # one-line-per-second rate limit shows (a faster flood gives a single line).
        time.sleep(max(0.0, started + FLOOD_SECONDS * (i + 1) / FLOOD - time.monotonic()))
    flood_seconds = time.monotonic() - started
    wait_until(
        lambda: sum(n for _, n in summary_lines(tunnel)) >= before + FLOOD,
        10,
        what="summary lines counting the flood",
    )
    lines = summary_lines(tunnel)
    stamps = [stamp for stamp, _ in lines]
    print(
        f"  per-IP flood: {FLOOD} refused in {flood_seconds:.1f} s, {len(lines)} summary"
        f" line(s) in all: {lines}"
    )
    assert len(set(stamps)) == len(stamps), "two summary lines within one second"
    assert len(lines) <= flood_seconds + 4  # ~1 per second (plus the earlier refusals)

    for sock in held:
        sock.sendall(b"pong")  # the held connections were never disturbed
        assert recv_exactly(sock.recv, 4) == b"pong"
        sock.close()
    # Only the served connections reached the backend, none of the refused ones.
    wait_until(lambda: len(backend.records) == LIMIT + 2, 10, what="backend records")
    assert not strays(backend)
    assert "Traceback" not in tunnel.log()
