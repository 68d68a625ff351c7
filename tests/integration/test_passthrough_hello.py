"""How a passthrough listener reads the ClientHello: split, garbled, oversized, cut short.

On the compiled plane C peeks at the first bytes and Python's reader decides
(csrc/fp_passthrough.c); on the Python plane the reader is fed as bytes are read. Both
must give the same bytes on the wire and the same log line; each test runs on both
(CI's default run is the compiled plane, ``TUNNEL_DATAPLANE=python`` the other).
"""

from __future__ import annotations

import socket
import ssl

import pytest

from tunnel.wire.clienthello import ClientHelloError, ClientHelloReader
from tunnel.wire.ja4 import ja4

from .harness import (
    BackendFactory,
    Certs,
    ConnRecord,
    TunnelFactory,
    echo_handler,
    expect_plane,
    read_until_closed,
    recording_handler,
    wait_until,
)
from .test_passthrough import NAME, client_hello, line_with, passthrough_tunnel

pytestmark = pytest.mark.timeout(60)

DECODE_ERROR = b"\x15\x03\x03\x00\x02\x02\x32"
HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"


def in_records(hello: bytes, size: int) -> bytes:
    """The same ClientHello message, carried in records of ``size`` bytes each."""
    message = hello[5 : 5 + int.from_bytes(hello[3:5], "big")]
    chunks = [message[i : i + size] for i in range(0, len(message), size)]
    return b"".join(b"\x16\x03\x01" + len(c).to_bytes(2, "big") + c for c in chunks)


def padded(hello: bytes, body: int) -> bytes:
    """``hello`` (one record) grown to a ``body``-byte message by an unknown extension."""
    message = hello[9 : 9 + int.from_bytes(hello[6:9], "big")]
    pad = body - len(message) - 4
    assert pad >= 0
    pos = 2 + 32  # legacy_version, random; then session id, ciphers, compression
    pos += 1 + message[pos]
    pos += 2 + int.from_bytes(message[pos : pos + 2], "big")
    pos += 1 + message[pos]
    extensions = int.from_bytes(message[pos : pos + 2], "big") + 4 + pad
    grown = (
        message[:pos]
        + extensions.to_bytes(2, "big")
        + message[pos + 2 :]
        + b"\xfa\xde"
        + pad.to_bytes(2, "big")
        + b"\x00" * pad
    )
    out = b"\x01" + len(grown).to_bytes(3, "big") + grown
    return b"\x16\x03\x01" + len(out).to_bytes(2, "big") + out


def reader_error(data: bytes) -> str:
    """What the Python plane's reader says of ``data`` (both planes must say the same)."""
    with pytest.raises(ClientHelloError) as info:
        ClientHelloReader().feed(data)
    return str(info.value)


def closing_recorder(record: ConnRecord) -> None:
    record.read_to_end()
    record.sock.shutdown(socket.SHUT_WR)


def nodelay(tunnel_address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(tunnel_address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize("shape", ["byte by byte", "in 7 records", "records byte by byte"])
def test_a_split_hello_is_passed_through_whole(
    shape: str, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    recorder = start_backend(closing_recorder)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    hello = client_hello()
    if "records" in shape:
        hello = in_records(hello, -(-(len(hello) - 5) // 7))
    pieces = [hello] if shape == "in 7 records" else [hello[i : i + 1] for i in range(len(hello))]
    with nodelay(tunnel.address) as sock:
        for piece in pieces:
            sock.sendall(piece)
        sock.sendall(b"and then")
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    (record,) = recorder.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    assert bytes(record.received) == hello + b"and then"
    line = line_with(tunnel, "passthrough=yes")
    assert f"sni={NAME}" in line and f" in={len(hello) + 8} " in line


def test_the_largest_hello_the_reader_takes_is_passed_through(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A 16 KiB message in 32 records: the most the reader (and C's peek) accepts."""
    recorder = start_backend(closing_recorder)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    hello = in_records(padded(client_hello(), 16384), -(-(16384 + 4) // 32))
    assert hello.count(b"\x16\x03\x01") >= 32 and len(hello) == 16388 + 32 * 5
    parsed = ClientHelloReader().feed(hello)
    assert parsed is not None and parsed.server_name == NAME
    with nodelay(tunnel.address) as sock:
        for i in range(0, len(hello), 1000):
            sock.sendall(hello[i : i + 1000])
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    (record,) = recorder.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    assert bytes(record.received) == hello
    assert f" in={len(hello)} " in line_with(tunnel, "passthrough=yes")


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(lambda h: h[:9] + b"\xff" * (len(h) - 9), id="a garbled message"),
        pytest.param(
            lambda h: in_records(h, 100)[:105] + b"\x17\x03\x03\x00\x10" + b"x" * 16,
            id="then an application record",
        ),
        pytest.param(lambda h: in_records(h, 8), id="over 32 records"),
        pytest.param(lambda h: padded(h, 16385), id="a message over 16 KiB"),
        pytest.param(lambda h: b"\x16\x03\x01\x41\x01" + b"\x01" * 50, id="record too long"),
        pytest.param(lambda h: b"\x80\x2e\x01\x03\x01" + b"\x00" * 45, id="SSLv2 hello"),
    ],
)
def test_garbled_hellos_get_the_readers_alert_and_words(
    garbage: object, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    data = garbage(client_hello())  # type: ignore[operator]
    with nodelay(tunnel.address) as sock:
        for i in range(0, len(data), 30):  # in pieces: the verdict may come mid-way
            try:
                sock.sendall(data[i : i + 30])
            except (BrokenPipeError, ConnectionResetError):
                break  # refused already
        reply, _ = read_until_closed(sock)
    assert reply == DECODE_ERROR
    line = line_with(tunnel, "bad ClientHello")
    assert f'reason="handshake failed: bad ClientHello: {reader_error(data)}"' in line
    assert " ja4=- " in line
    assert recorder.records == []


def test_a_hello_cut_short_by_a_fin(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The input ends mid-hello: OpenSSL answers what came, as without passthrough."""
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    with nodelay(tunnel.address) as sock:
        sock.sendall(client_hello()[:60])
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    line = line_with(tunnel, "reason=")
    assert 'reason="client closed during handshake"' in line, line
    assert recorder.records == []


def test_a_denied_ja4_on_a_passthrough_name(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """deny_ja4 applies before passthrough, with its own alert and log line."""
    hello = client_hello()
    parsed = ClientHelloReader().feed(hello)
    assert parsed is not None
    fingerprint = ja4(parsed)
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = start_tunnel(
        "127.0.0.1:9",
        route=f"sni:{NAME}=pass",
        deny_ja4=fingerprint,
        extra={"backend:pass": {"connect": f"127.0.0.1:{port}", "passthrough": "yes"}},
    )
    expect_plane(tunnel)
    with nodelay(tunnel.address) as sock:
        sock.sendall(hello)
        reply, _ = read_until_closed(sock)
    assert reply == HANDSHAKE_FAILURE
    line = line_with(tunnel, "denied")
    assert f'reason="denied: ja4 {fingerprint}"' in line and f" ja4={fingerprint} " in line
    assert recorder.records == []


def test_a_split_hello_for_another_name_is_terminated(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """On a mixed listener, a name without a passthrough route gets Tunnel's TLS, however
    its hello arrived (none of it was consumed by the sniff)."""
    echo = start_backend(echo_handler)
    tunnel = passthrough_tunnel(start_tunnel, echo.address, 9)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with nodelay(tunnel.address) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flight = outgoing.read()
                step = 1 if len(flight) > 200 else len(flight)  # the ClientHello: by bytes
                for i in range(0, len(flight), step):
                    sock.sendall(flight[i : i + step])
                data = sock.recv(65536)
                assert data, "closed in the handshake"
                incoming.write(data)
        tls.write(b"terminated")
        sock.sendall(outgoing.read())
        received = b""
        while len(received) < 10:
            try:
                received += tls.read(100)
            except ssl.SSLWantReadError:
                incoming.write(sock.recv(65536))
    assert received == b"terminated"
    line = line_with(tunnel, "sni=localhost")
    assert "passthrough" not in line and " tls=TLSv1.3 " in line
