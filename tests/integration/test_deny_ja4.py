"""deny_ja4 on the wire: the same bytes, log line and metrics on both data planes.

The Python plane reads the ClientHello before OpenSSL (dataplane/hello.py); the compiled
plane decides from the copy its message callback takes, before OpenSSL parses it, and from
the first bytes it peeks at before OpenSSL reads (csrc/fp_policy.c). Where a JA4 policy is
set, a hello the reader cannot read is refused with decode_error, whatever OpenSSL would
have made of it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from harness import procfs
from harness.admin import scrape, value

from tunnel.dataplane.hello import ALERT_DECODE_ERROR, ALERT_HANDSHAKE_FAILURE
from tunnel.wire import proxy_protocol as pp
from tunnel.wire.clienthello import ClientHelloReader
from tunnel.wire.ja4 import ja4

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    echo_handler,
    expect_plane,
    read_until_closed,
    wait_until,
)
from .test_ja4_groups import _hello_offering, _padded, closing_recorder, expected_ja4, last_line

pytestmark = pytest.mark.timeout(60)

SOME_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_deny_ja4_on_the_wire(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A denied client gets one plaintext handshake_failure alert and a FIN, nothing of
    OpenSSL's: the same bytes on both planes (dataplane/hello.py)."""
    backend = start_backend(echo_handler)
    first_flight = _hello_offering("X25519")
    hello = ClientHelloReader().feed(first_flight)
    assert hello is not None
    denied = ja4(hello)
    tunnel = start_tunnel(backend.address, deny_ja4=denied, tunnel={"admin": "127.0.0.1:0"})
    admin = tunnel.admin_port()
    expect_plane(tunnel)
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(first_flight)
        reply, how = read_until_closed(raw)
    assert (reply, how) == (ALERT_HANDSHAKE_FAILURE, "eof")
    line = last_line(tunnel)
    assert f" ja4={denied} " in line and f'reason="denied: ja4 {denied}"' in line
    assert not backend.records

    def counted() -> dict[object, float] | None:
        samples = scrape(admin)
        n = value(samples, "tunnel_clients_denied_total", listener="test", reason="ja4")
        return samples if n == 1 else None

    samples = wait_until(counted, timeout=20, interval=0.2, what="the denied metrics")
    assert value(samples, "tunnel_handshakes_total", listener="test", result="denied") == 1
    assert value(samples, "tunnel_connections_closed_total", listener="test", reason="denied") == 1


def test_deny_ja4_refuses_a_hello_over_the_readers_limit(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Where a JA4 policy is set, a ClientHello too large to fingerprint is refused with
    decode_error (OpenSSL would have served it: see the size-limit test above)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        deny_ja4=SOME_JA4,
        tunnel={"admin": "127.0.0.1:0"},
    )
    admin = tunnel.admin_port()
    expect_plane(tunnel)
    message = _padded(_hello_offering("X25519")[5:], 17000)
    flight = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        for part in (message[i : i + 4096] for i in range(0, len(message), 4096))
    )
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(flight)
        reply, how = read_until_closed(raw)
    assert (reply, how) == (ALERT_DECODE_ERROR, "eof")
    line = last_line(tunnel)
    detail = f"ClientHello of {len(message) - 4} bytes: more than 16384"
    assert f'reason="handshake failed: bad ClientHello: {detail}"' in line
    assert " ja4=- " in line

    def counted() -> dict[object, float] | None:
        samples = scrape(admin)
        n = value(samples, "tunnel_handshakes_total", listener="test", result="bad_client_hello")
        return samples if n else None

    assert wait_until(counted, timeout=20, interval=0.2, what="the handshake metric")


def _extensions_at(message: bytes) -> int:
    """Where the extensions' length is, in a ClientHello message."""
    pos = 4 + 34
    pos += 1 + message[pos]  # session id
    pos += 2 + int.from_bytes(message[pos : pos + 2], "big")  # cipher suites
    return pos + 1 + message[pos]  # compression methods


def _twice(message: bytes) -> bytes:
    """extended_master_secret twice (OpenSSL refuses it while parsing, the reader too)."""
    pos, extra = _extensions_at(message), b"\x00\x17\x00\x00" * 2
    size = int.from_bytes(message[pos : pos + 2], "big") + len(extra)
    body = message[4:pos] + size.to_bytes(2, "big") + message[pos + 2 :] + extra
    return b"\x01" + len(body).to_bytes(3, "big") + body


def _short_extensions(message: bytes) -> bytes:
    """The extensions' length one byte short: a byte left after them."""
    pos = _extensions_at(message)
    size = int.from_bytes(message[pos : pos + 2], "big") - 1
    return message[:pos] + size.to_bytes(2, "big") + message[pos + 2 :]


def _non_ascii_name(message: bytes) -> bytes:
    """A server name OpenSSL takes but the reader refuses (not an ASCII host name)."""
    return message.replace(b"localhost", b"localh\xc3\xa9t")


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (_twice, "extension 0x0017 appears twice"),
        (_short_extensions, "trailing bytes after the extensions"),
        (_non_ascii_name, "server_name is not an ASCII host name"),
    ],
)
def test_deny_ja4_refuses_a_hello_the_reader_refuses(
    mangle: Callable[[bytes], bytes],
    detail: str,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """With a JA4 policy, the reader's verdict is the answer (decode_error), also where
    OpenSSL would have answered otherwise (its own alert) or not refused at all."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, deny_ja4=SOME_JA4)
    expect_plane(tunnel)
    message = mangle(_hello_offering("X25519")[5:])
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message)
        reply, how = read_until_closed(raw)
    assert (reply, how) == (ALERT_DECODE_ERROR, "eof")
    line = last_line(tunnel)
    assert f'reason="handshake failed: bad ClientHello: {detail}"' in line
    assert " ja4=- " in line


@pytest.mark.parametrize(
    ("first", "detail"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "first byte 0x47 is not a TLS handshake record"),
        (
            b"\x80\x2e\x01\x03\x01\x00\x15" + bytes(41),
            "SSLv2-style hello: not supported (TLS 1.x only)",
        ),
        (b"\x16\x02\x00\x00\x05\x01\x00\x00\x01\x00", "TLS record version major 2: not TLS"),
        (b"\x16\x03\x01\x00\x00", "bad TLS record length 0"),
        (
            b"\x16\x03\x01\x00\x08\x02\x00\x00\x04" + bytes(4),
            "first handshake message is type 2, not ClientHello",
        ),
        (
            b"\x16\x03\x01\x40\x00\x01\x00\x50\x00" + bytes(100),
            "ClientHello of 20480 bytes: more than 16384",
        ),
    ],
)
def test_deny_ja4_refuses_first_bytes_that_are_no_client_hello(
    first: bytes, detail: str, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Not TLS, SSLv2, not a ClientHello, over the limits: the reader's refusal, on the
    compiled plane too (C peeks at the first bytes before OpenSSL reads them)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, deny_ja4=SOME_JA4)
    expect_plane(tunnel)
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(first)
        reply, how = read_until_closed(raw)
    assert (reply, how) == (ALERT_DECODE_ERROR, "eof")
    assert f'reason="handshake failed: bad ClientHello: {detail}"' in last_line(tunnel)


def test_deny_ja4_first_bytes_that_come_after_the_accept(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The compiled plane starts a handshake at accept: a client that has sent nothing yet
    is peeked at again once it has, and its non-hello first bytes get the reader's
    refusal, not OpenSSL's (unexpected_message)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, deny_ja4=SOME_JA4)
    expect_plane(tunnel)
    pids = [tunnel.pid, *tunnel.worker_pids()]
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        wait_until(lambda: procfs.connections_held(pids) > 0, 10, what="the accept")
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply, how = read_until_closed(raw)
    assert (reply, how) == (ALERT_DECODE_ERROR, "eof")
    detail = "first byte 0x47 is not a TLS handshake record"
    assert f'reason="handshake failed: bad ClientHello: {detail}"' in last_line(tunnel)


@pytest.mark.parametrize("records", [32, 33])
def test_deny_ja4_and_a_hello_over_many_records(
    records: int, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The reader takes a hello over up to 32 records (OpenSSL then answers it), and
    refuses one over more, on both planes (C counts the records' headers)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, deny_ja4=SOME_JA4)
    expect_plane(tunnel)
    message = _hello_offering("X25519")[5:]
    parts = [message[i : i + 1] for i in range(records - 1)] + [message[records - 1 :]]
    flight = b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in parts)
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(flight)
        raw.shutdown(socket.SHUT_WR)
        reply, _ = read_until_closed(raw)
    if records <= 32:
        assert reply[:1] == b"\x16"  # OpenSSL's ServerHello
        return
    assert reply == ALERT_DECODE_ERROR
    line = last_line(tunnel)
    assert (
        'reason="handshake failed: bad ClientHello: ClientHello split into over 32 records"' in line
    )


def test_an_allowed_hello_keeps_its_ja4_for_the_tlv_and_the_log_line(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A client deny_ja4 lets through: the JA4 its check computed (kept, not computed
    again) is the one the PROXY v2 TLV and the log line carry, connection after
    connection."""
    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(
        backend.address, deny_ja4=SOME_JA4, proxy_protocol="v2", proxy_ja4_tlv="0xE1"
    )
    expect_plane(tunnel)
    ctx = certs.client_context()
    fingerprint = expected_ja4(ctx)
    assert fingerprint != SOME_JA4
    for count in (1, 2):
        with tunnel.connect(ctx) as sock:
            sock.sendall(b"x")
            record = backend.wait_connections(count)[-1]
            wait_until(lambda r=record: r.received.endswith(b"x"), what="payload at the backend")
            sock.unwrap()
        header, rest = pp.decode(bytes(record.received))
        assert rest == b"x"
        assert header.tlv(0xE1) == fingerprint.encode()
        assert f" ja4={fingerprint} " in last_line(tunnel, count)
