"""Hostile PROXY headers on a ``proxy_from`` listener: oversized, truncated, garbage, each
whole and split byte by byte. Each connection is closed before any TLS byte is sent (FIN,
or an RST where bytes past the header's cap were never read), with a "proxy header error"
line; nothing reaches the backend; the one worker survives and serves a good header after
all of them; headers that never end are cut at proxy_timeout; its fds come back. On the
compiled plane (the default) the header is framed in C (csrc/fp_proxy.c) and decoded by the
Python plane's decoder; the test checks which plane served it.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness.backends import Backend, BackendFactory
from harness.certs import Certs
from harness.net import read_until_closed, recv_exactly
from harness.planes import compiled_run
from harness.tunnel import TunnelFactory, TunnelProcess
from harness.waits import wait_until

from tunnel.wire import proxy_protocol as pp

from .support import close_reason, dispatch_handler, process_figures, strays

pytestmark = pytest.mark.timeout(120)

CLIENT = ("203.0.113.9", 4321)
SERVER = ("198.51.100.2", 443)


def _bad_crc() -> bytes:
    header = bytearray(pp.encode_v2(CLIENT, SERVER, crc32c=True))
    header[-1] ^= 0xFF
    return bytes(header)


def _hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.create_default_context()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# name -> (bytes sent, then FIN?)
CASES: dict[str, tuple[bytes, bool]] = {
    "v1-over-107": (b"PROXY TCP4 " + b"1" * 200 + b"\r\n", False),
    "v1-no-crlf-flood": (b"PROXY " + random.Random(3).randbytes(256 * 1024), False),
    "v1-bare-lf": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", False),
    "v1-bad-address": (b"PROXY TCP4 999.1.1.1 5.6.7.8 1 2\r\n", False),
    "v1-bad-port": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 099999\r\n", False),
    "v1-truncated": (pp.encode_v1(CLIENT, SERVER)[:-3], True),
    "v2-length-over-cap": (pp.V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64 * 1024), False),
    "v2-length-too-short": (pp.V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), False),
    "v2-truncated": (pp.encode_v2(CLIENT, SERVER, [(0xE0, b"x" * 300)])[:200], True),
    "v2-fixed-part-only": (pp.V2_SIGNATURE[:9], True),
    "v2-bad-crc": (_bad_crc(), False),
    "v2-bad-version": (pp.V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), False),
    "garbage": (b"\x42" + random.Random(4).randbytes(4095), False),
    "tls-without-header": (_hello(), False),
    "empty-then-fin": (b"", True),
}
# The decoder's words, the same on both planes (the same decoder reads the same bytes; the
# bytes quoted after "starts with" are those that had arrived, so only the first is known).
EXPECTED = {
    "v1-over-107": "v1 header longer than 107 bytes",
    "v1-bare-lf": "v1 header: line ends with a bare LF, CRLF required",
    "v1-bad-address": "v1 header: invalid TCP4 source address b'999.1.1.1'",
    "v1-bad-port": "v1 header: invalid destination port b'099999'",
    "v2-length-over-cap": "v2 header: length 65535 exceeds limit of 4096",
    "v2-length-too-short": "v2 header: length 4 too short for TCP4 addresses (12)",
    "v2-bad-crc": "v2 header: CRC32C checksum mismatch",
    "v2-bad-version": "v2 header: unsupported version 3",
    "garbage": "not a PROXY protocol header: starts with b'B",
    "tls-without-header": "not a PROXY protocol header: starts with b'\\x16",
}
SPLIT_LIMIT = 600
PROXY_TIMEOUT = 2.0
STUCK = 50  # byte by byte only for the short ones: one send per byte


@dataclass
class Proxied:
    tunnel: TunnelProcess
    backend: Backend
    fds_before: int  # after a warm-up


@pytest.fixture(scope="module")
def proxied(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """One worker with proxy_from behind a dispatching backend."""
    backends = BackendFactory()
    factory = TunnelFactory(certs, tmp_path_factory.mktemp("proxied"))
    try:
        backend = backends(dispatch_handler)
        tunnel = factory(
            backend.address, workers=1, proxy_from="127.0.0.0/8", proxy_timeout=f"{PROXY_TIMEOUT}s"
        )
        served_through(tunnel, certs, "warm-up")
        yield Proxied(tunnel, backend, process_figures(tunnel).fds)
    finally:
        factory.stop_all()
        backends.close_all()


def served_through(tunnel: TunnelProcess, certs: Certs, name: str) -> None:
    """A good v1 header, then TLS and an echo through the backend."""
    raw = socket.create_connection(tunnel.address, timeout=10)
    raw.sendall(pp.encode_v1(CLIENT, SERVER))
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(f"echo {name}\n".encode() + b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"


def test_it_runs_on_the_requested_plane(proxied: Proxied) -> None:
    log = proxied.tunnel.log()
    if compiled_run():  # the default
        assert "listener test: compiled data plane" in log
    else:
        assert "data plane: python for every listener (TUNNEL_DATAPLANE=python)" in log


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-split"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_header_is_closed_before_tls(
    name: str, split: bool, proxied: Proxied, certs: Certs
) -> None:
    tunnel = proxied.tunnel
    data, fin = CASES[name]
    if split and len(data) > SPLIT_LIMIT:
        pytest.skip("byte by byte only for headers of plausible size")
    workers = tunnel.worker_pids()
    since = len(tunnel.conn_lines())
    with tunnel.raw() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Closed while we are still sending is fine: the tunnel stops reading at its cap.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in (data[i : i + 1] for i in range(len(data))) if split else (data,):
                sock.sendall(piece)
            if fin:
                sock.shutdown(socket.SHUT_WR)
        received, how = read_until_closed(sock, timeout=10)
        assert how in ("eof", "reset"), f"still open: {how}"
        assert received == b"", received[:32]  # not one TLS byte
        reason = close_reason(tunnel, sock, since)
    assert reason.startswith("proxy header error: "), reason
    if fin:
        assert reason.endswith("client closed before the header ended"), reason
    else:
        assert EXPECTED.get(name, "") in reason, reason
    assert tunnel.worker_pids() == workers  # the worker survived
    served_through(tunnel, certs, f"after-{name}-{split}")


def test_headers_that_never_end_time_out_together(proxied: Proxied, certs: Certs) -> None:
    """Many balancers' connections stuck mid-header: each is cut at proxy_timeout (an RST,
    as the Python plane's abort), while a good header is served meanwhile."""
    tunnel = proxied.tunnel
    since = len(tunnel.conn_lines())
    stuck = []
    for i in range(STUCK):
        sock = tunnel.raw()
        sock.sendall(pp.encode_v2(CLIENT, SERVER)[: 5 + i % 20])  # never complete
        stuck.append(sock)
    served_through(tunnel, certs, "while-stuck")
    for sock in stuck:
        with sock:
            received, how = read_until_closed(sock, timeout=PROXY_TIMEOUT + 10)
            assert (received, how in ("eof", "reset")) == (b"", True), how
    wait_until(
        lambda: (
            sum('reason="proxy header timeout"' in x for x in tunnel.conn_lines()[since:]) == STUCK
        ),
        10,
        what="a timeout line for each",
    )


def test_worker_survived_and_leaked_nothing(proxied: Proxied, certs: Certs) -> None:
    tunnel, backend = proxied.tunnel, proxied.backend
    served_through(tunnel, certs, "last")
    assert not strays(backend), [bytes(r.received[:64]) for r in strays(backend)]
    wait_until(lambda: process_figures(tunnel).fds <= proxied.fds_before, 30, what="fds back")
    assert "Traceback" not in tunnel.log()
