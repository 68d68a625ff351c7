"""Through a running Tunnel: JA4 in the log line, in a PROXY v2 TLV and as a deny rule;
key exchange groups beyond the old X25519:P-256:P-384 default, logged and counted."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from harness.admin import scrape, value
from prometheus_client.parser import text_string_to_metric_families

from tunnel.wire import proxy_protocol as pp
from tunnel.wire.clienthello import ClientHelloReader, parse_handshake_message
from tunnel.wire.ja4 import ja4

from .harness import (
    BackendFactory,
    Certs,
    ConnRecord,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    expect_plane,
    read_until_closed,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def expected_ja4(ctx: ssl.SSLContext, name: str = "localhost") -> str:
    """The JA4 of the ClientHello this context sends (made in memory, no socket)."""
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = ClientHelloReader().feed(outgoing.read())
    assert hello is not None
    return ja4(hello)


def closing_recorder(record: ConnRecord) -> None:
    """Keep what arrives until EOF, then end this direction too (as a server would: the
    connection, and its log line, end only once both directions have)."""
    record.read_to_end()
    record.sock.shutdown(socket.SHUT_WR)


def last_line(tunnel: TunnelProcess, count: int = 1) -> str:
    lines = wait_until(lambda: len(tunnel.conn_lines()) >= count and tunnel.conn_lines())
    return str(lines[count - 1])


def test_ja4_logged_and_sent_in_a_tlv(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(backend.address, proxy_protocol="v2", proxy_ja4_tlv="0xE1")
    ctx = certs.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    fingerprint = expected_ja4(ctx)
    assert fingerprint.startswith("t13d") and "h2_" in fingerprint
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"x")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"x"), what="payload at the backend")
        sock.unwrap()
    header, rest = pp.decode(bytes(record.received))
    assert rest == b"x"
    assert header.tlv(0xE1) == fingerprint.encode()
    assert f" ja4={fingerprint} " in last_line(tunnel)


@pytest.mark.parametrize("proxy", ["off", "v1", "v2"])
def test_ja4_logged_when_no_header_carries_it(
    proxy: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Without a JA4 TLV, the compiled plane computes the JA4 only for the log line (at the
    close, from the ClientHello it kept): it is logged all the same."""
    backend = start_backend(echo_handler if proxy == "off" else closing_recorder)
    tunnel = start_tunnel(backend.address, proxy_protocol=proxy)
    expect_plane(tunnel)
    ctx = certs.client_context()
    fingerprint = expected_ja4(ctx)
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"ping")
        if proxy == "off":
            assert sock.recv(4) == b"ping"
        else:
            (record,) = backend.wait_connections(1)
            wait_until(lambda: record.received.endswith(b"ping"), what="payload at the backend")
    assert f" ja4={fingerprint} " in last_line(tunnel)


@pytest.mark.parametrize("group", ["P-521", "X25519"])
def test_negotiated_group_sent_in_a_tlv(
    group: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    from tunnel._native.openssl import set_groups

    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(
        backend.address,
        proxy_protocol="v2",
        proxy_ja4_tlv="0xE1",
        proxy_group_tlv="0xE2",
        tunnel={"admin": "127.0.0.1:0"},
    )
    admin = tunnel.admin_port()  # admin says port 0
    ctx = certs.client_context()
    set_groups(ctx, group)  # the client offers only this group, so it is the negotiated one
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"x")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"x"), what="payload at the backend")
    header, rest = pp.decode(bytes(record.received))
    assert rest == b"x"
    assert header.tlv(0xE2) == group.encode()
    assert header.tlv(0xE1) == expected_ja4(ctx).encode()
    assert f" group={group} " in last_line(tunnel)

    def groups() -> float:  # the same group in /metrics, once the worker reported it
        counts = scrape(admin)
        return value(counts, "tunnel_key_exchange_groups_total", listener="test", group=group)

    assert wait_until(groups, timeout=20, interval=0.2, what="the group in /metrics") == 1


def test_deny_ja4_refuses_before_the_handshake(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    denied_ctx = certs.client_context("1.2")  # its fingerprint differs from a 1.3 client's
    denied = expected_ja4(denied_ctx)
    tunnel = start_tunnel(backend.address, deny_ja4=denied, tunnel={"admin": "127.0.0.1:0"})
    admin = tunnel.admin_port()  # admin says port 0
    expect_plane(tunnel)
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        tunnel.connect(denied_ctx)
    with tunnel.connect(certs.client_context("1.3")) as sock:  # another fingerprint: served
        sock.sendall(b"ok")
        assert sock.recv(10) == b"ok"
    line = next(line for line in tunnel.conn_lines() if "denied" in line)
    assert f'reason="denied: ja4 {denied}"' in line
    assert backend.records and len(backend.records) == 1

    def denied_count() -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "tunnel_clients_denied_total" and sample.value:
                    return sample.value if sample.labels["reason"] == "ja4" else None
        return None

    assert wait_until(denied_count, timeout=20, interval=0.2, what="denied metric") == 1


@pytest.mark.parametrize("group", ["P-521", "X448", "P-384"])
def test_clients_offering_one_group_are_served_and_it_is_logged(
    group: str,
    certs: Certs,
    tmp_path: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """Before: X25519:P-256:P-384 only, so P-521- or X448-only clients were refused."""
    ca_file = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca_file))
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address)
    result = subprocess.run(
        [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{tunnel.port}"),
            *("-groups", group, "-servername", "localhost", "-CAfile", str(ca_file)),
            "-verify_return_error",
        ],
        input=b"ping\n",
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert re.search(r"Server Temp Key: |Negotiated TLS1.3 group: ", out)
    assert f" group={group} " in last_line(tunnel)


def test_curves_still_narrows(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, curves="X25519:P-256")
    first_flight = _hello_offering("P-521")
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(first_flight)
        reply, _ = read_until_closed(raw)
    assert reply[:1] == b"\x15"  # an alert: no shared group
    line = last_line(tunnel)
    assert "handshake failed" in line
    hello = ClientHelloReader().feed(first_flight)
    assert hello is not None
    assert f" ja4={ja4(hello)} " in line  # a failed handshake's hello is fingerprinted too


def _hello_offering(group: str) -> bytes:
    from tunnel._native.openssl import set_groups

    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    set_groups(ctx, group)
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("padding", [15000, 17000])
def test_big_hello_over_records_and_the_size_limit(
    padding: int, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A ClientHello over several records is fingerprinted up to 16 KiB; OpenSSL serves a
    larger one too, but it has no JA4 (and the compiled plane does not keep it)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address)
    message = _padded(_hello_offering("X25519")[5:], padding)
    flight = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        for part in (message[i : i + 4096] for i in range(0, len(message), 4096))
    )
    with socket.create_connection(tunnel.address, timeout=10) as raw:
        raw.sendall(flight)
        raw.shutdown(socket.SHUT_WR)
        reply, _ = read_until_closed(raw)
    assert reply[:1] == b"\x16"  # OpenSSL answered the hello: it was well formed
    expected = ja4(parse_handshake_message(message)) if len(message) <= 16384 + 4 else "-"
    assert f" ja4={expected} " in last_line(tunnel)


def _padded(message: bytes, size: int) -> bytes:
    """The ClientHello handshake message with an unassigned extension of ``size`` bytes."""
    pos = 4 + 34
    pos += 1 + message[pos]  # session id
    pos += 2 + int.from_bytes(message[pos : pos + 2], "big")  # cipher suites
    pos += 1 + message[pos]  # compression methods
    extension = b"\xfe\x00" + size.to_bytes(2, "big") + b"\x00" * size
    extensions = int.from_bytes(message[pos : pos + 2], "big") + len(extension)
    body = message[4:pos] + extensions.to_bytes(2, "big") + message[pos + 2 :] + extension
    return b"\x01" + len(body).to_bytes(3, "big") + body
