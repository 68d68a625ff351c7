"""SNI passthrough beside termination on one port, with a real TLS backend (openssl s_server).

The client sees the backend's own certificate for a passthrough name and Tunnel's for the
others; the passed-through stream is relayed untouched (ClientHello included), with an
optional PROXY header first; a ClientHello Tunnel cannot read never reaches the backend.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from harness.admin import scrape, value

from tunnel.wire import proxy_protocol as pp
from tunnel.wire.clienthello import ClientHelloReader
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
    recording_handler,
    reserve_port,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)
NAME = "pass.example"


@pytest.fixture(scope="module")
def backend_ca() -> trustme.CA:
    """The passthrough backend's own CA: Tunnel never sees its key."""
    return trustme.CA()


@contextlib.contextmanager
def s_server(ca: trustme.CA, directory: Path) -> Iterator[int]:
    """``openssl s_server -rev`` (each line sent back reversed) for NAME; stopped by PID."""
    pem = directory / "backend.pem"
    ca.issue_cert(NAME).private_key_and_cert_chain_pem.write_to_path(str(pem))
    port = reserve_port()
    log = directory / "s_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pem), "-rev"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        wait_until(lambda: "ACCEPT" in log.read_text(), 15, 0.05, what="s_server listening")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=5)


def passthrough_tunnel(
    start_tunnel: TunnelFactory, default: str, port: int, **backend: str
) -> TunnelProcess:
    tunnel = start_tunnel(
        default,
        route=f"sni:{NAME}=pass",
        extra={"backend:pass": {"connect": f"127.0.0.1:{port}", "passthrough": "yes", **backend}},
    )
    expect_plane(tunnel)  # the compiled run must test the compiled plane (fp_passthrough.c)
    return tunnel


def tls_client(tunnel: TunnelProcess, ctx: ssl.SSLContext, name: str) -> ssl.SSLSocket:
    raw = socket.create_connection(tunnel.address, timeout=10)
    return ctx.wrap_socket(raw, server_hostname=name)


def client_hello(name: str | None = NAME) -> bytes:
    """A real ClientHello (Python's ssl over memory BIOs) and nothing else."""
    outgoing = ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def line_with(tunnel: TunnelProcess, needle: str) -> str:
    def find() -> str | None:
        return next((line for line in tunnel.conn_lines() if needle in line), None)

    found = wait_until(find, what=f"a conn line with {needle!r}")
    assert isinstance(found, str)
    return found


def test_passthrough_and_termination_on_one_port(
    certs: Certs,
    backend_ca: trustme.CA,
    tmp_path: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    plain = start_backend(echo_handler)
    with s_server(backend_ca, tmp_path) as port:
        tunnel = passthrough_tunnel(start_tunnel, plain.address, port)
        passed_ctx = ssl.create_default_context()
        backend_ca.configure_trust(passed_ctx)
        with tls_client(tunnel, passed_ctx, NAME) as sock:
            # The backend's certificate, verified against the backend's CA: not Tunnel's.
            names = [v for k, v in sock.getpeercert()["subjectAltName"] if k == "DNS"]
            assert names == [NAME]
            sock.sendall(b"hello passthrough\n")
            reply = b""
            while not reply.endswith(b"\n"):
                reply += sock.recv(100)
            assert reply == b"hguorhtssap olleh\n"
        with tls_client(tunnel, certs.client_context(), "localhost") as sock:
            assert "localhost" in str(sock.getpeercert()["subjectAltName"])
            sock.sendall(b"terminated")
            assert sock.recv(100) == b"terminated"
    passed = line_with(tunnel, "passthrough=yes")
    assert f"sni={NAME}" in passed and "tls=- cipher=-" in passed
    assert f"backend=127.0.0.1:{port}" in passed
    assert re.search(r" ja4=t13d\d{4}00_[0-9a-f]{12}_[0-9a-f]{12} ", passed)
    terminated = line_with(tunnel, "sni=localhost")
    assert "passthrough" not in terminated and "tls=TLSv1.3" in terminated
    assert " group=X25519 " in terminated and " ja4=t13d" in terminated


def test_passthrough_with_proxy_v2_and_half_close(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The backend gets the PROXY header (SNI as AUTHORITY, JA4 TLV), then every byte."""

    def reply_after_eof(record: ConnRecord) -> None:
        record.read_to_end()
        record.sock.sendall(b"reply after your FIN")
        record.sock.shutdown(socket.SHUT_WR)

    recorder = start_backend(reply_after_eof)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = start_tunnel(
        "127.0.0.1:9",
        route=f"sni:{NAME}=pass",
        proxy_ja4_tlv="0xE1",
        extra={
            "backend:pass": {
                "connect": f"127.0.0.1:{port}",
                "passthrough": "yes",
                "proxy_protocol": "v2",
            }
        },
    )
    expect_plane(tunnel)
    hello = client_hello()
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(hello[:50])  # split: the hello is read across reads
        sock.sendall(hello[50:] + b"after the hello")
        sock.shutdown(socket.SHUT_WR)
        data, how = read_until_closed(sock)
    assert data == b"reply after your FIN", how
    (record,) = recorder.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    header, rest = pp.decode(bytes(record.received))
    assert header.tlv(pp.PP2_TYPE_AUTHORITY) == NAME.encode()
    parsed = ClientHelloReader().feed(hello)
    assert parsed is not None
    assert header.tlv(0xE1) == ja4(parsed).encode()
    assert header.ssl_info() is None  # Tunnel did not terminate: no SSL TLV
    assert rest == hello + b"after the hello"
    line = line_with(tunnel, "passthrough=yes")
    assert 'reason="done"' in line and f"in={len(hello) + 15}" in line


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad ClientHello: first byte 0x47"),
        (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", "bad ClientHello: ClientHello truncated"),
        (b"\x16\x03\x01\x40\x00\x01\x00\x40\x01", "bad ClientHello: ClientHello of 16385"),
    ],
)
def test_unreadable_hello_never_reaches_the_backend(
    data: bytes, reason: str, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(data)
        reply, _ = read_until_closed(sock)
    assert reply == b"\x15\x03\x03\x00\x02\x02\x32"  # a fatal decode_error alert
    line = line_with(tunnel, "bad ClientHello")
    assert reason in line
    assert recorder.records == []


def test_slow_hello_times_out_before_any_backend(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)  # handshake_timeout 1s
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(client_hello()[:20])
        read_until_closed(sock)
    assert 'reason="handshake timeout"' in line_with(tunnel, "handshake timeout")
    assert recorder.records == []


def test_passthrough_backend_down_is_an_alert_and_a_reason(start_tunnel: TunnelFactory) -> None:
    dead = reserve_port()
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", dead)
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(client_hello())
        reply, _ = read_until_closed(sock)
    assert reply == b"\x15\x03\x03\x00\x02\x02\x50"  # internal_error
    assert "backend unreachable" in line_with(tunnel, "passthrough=yes")


def test_passthrough_idle_timeout(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    recorder = start_backend(recording_handler)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = start_tunnel(
        "127.0.0.1:9",
        route=f"sni:{NAME}=pass",
        idle_timeout="1s",
        extra={"backend:pass": {"connect": f"127.0.0.1:{port}", "passthrough": "yes"}},
    )
    expect_plane(tunnel)
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(client_hello())
        read_until_closed(sock)
    assert 'reason="idle timeout"' in line_with(tunnel, "passthrough=yes")


def test_backend_fin_first_client_may_still_send(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A FIN from the backend reaches the client as a FIN; the client's bytes still flow."""

    def bye_then_listen(record: ConnRecord) -> None:
        record.sock.sendall(b"bye")
        record.sock.shutdown(socket.SHUT_WR)
        record.read_to_end()

    recorder = start_backend(bye_then_listen)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = passthrough_tunnel(start_tunnel, "127.0.0.1:9", port)
    hello = client_hello()
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(hello)
        received = b""
        while chunk := sock.recv(100):  # ends at the FIN
            received += chunk
        assert received == b"bye"
        sock.sendall(b"still talking")
        sock.shutdown(socket.SHUT_WR)
        (record,) = recorder.wait_connections(1)
        wait_until(record.eof.is_set, what="backend EOF")
    assert bytes(record.received) == hello + b"still talking"
    assert 'reason="done"' in line_with(tunnel, "passthrough=yes")


def test_passthrough_per_ip_cap_and_metrics(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """max_connections_per_ip holds passed-through connections too (refused before any byte
    reaches the backend), and their traffic is in /metrics like a terminated one's."""

    def closing_recorder(record: ConnRecord) -> None:
        record.read_to_end()
        record.sock.shutdown(socket.SHUT_WR)

    recorder = start_backend(closing_recorder)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = start_tunnel(
        "127.0.0.1:9",
        route=f"sni:{NAME}=pass",
        max_connections_per_ip=1,
        tunnel={"admin": "127.0.0.1:0"},
        extra={"backend:pass": {"connect": f"127.0.0.1:{port}", "passthrough": "yes"}},
    )
    expect_plane(tunnel)
    admin = tunnel.admin_port()  # admin says port 0
    hello = client_hello()
    with socket.create_connection(tunnel.address, timeout=10) as held:
        held.sendall(hello)
        (record,) = recorder.wait_connections(1)
        wait_until(lambda: bytes(record.received) == hello, what="the hello at the backend")
        with tunnel.raw() as refused:
            refused.sendall(hello)
            assert read_until_closed(refused)[0] == b""
        assert len(recorder.records) == 1
    line = line_with(tunnel, "passthrough=yes")
    assert f" in={len(hello)} " in line

    def counted() -> dict[object, float] | None:
        samples = scrape(admin)
        done = value(samples, "tunnel_connections_closed_total", listener="test", reason="done")
        return samples if done == 1 else None

    samples = wait_until(counted, timeout=20, interval=0.2, what="the connection in /metrics")
    assert value(samples, "tunnel_connections_refused_per_ip_total", listener="test") == 1
    assert value(samples, "tunnel_connections_accepted_total", listener="test") == 1
    assert value(samples, "tunnel_bytes_total", listener="test", direction="in") == len(hello)
    assert value(samples, "tunnel_handshakes_total", listener="test", result="passthrough") == 1


def test_passthrough_behind_a_balancer(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """With proxy_from, the inbound header's client is the one the passthrough backend's
    PROXY header and the log line name; the hello after the header is relayed whole."""

    def closing_recorder(record: ConnRecord) -> None:
        record.read_to_end()
        record.sock.shutdown(socket.SHUT_WR)

    recorder = start_backend(closing_recorder)
    port = int(recorder.address.rsplit(":", 1)[1])
    tunnel = start_tunnel(
        "127.0.0.1:9",
        route=f"sni:{NAME}=pass",
        proxy_from="127.0.0.0/8",
        max_connections_per_ip=1,
        extra={
            "backend:pass": {
                "connect": f"127.0.0.1:{port}",
                "passthrough": "yes",
                "proxy_protocol": "v2",
            }
        },
    )
    expect_plane(tunnel)
    hello = client_hello()
    inbound = pp.encode_v1(("203.0.113.9", 4000), ("192.0.2.1", 443))
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        sock.sendall(inbound + hello)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    (record,) = recorder.wait_connections(1)
    wait_until(record.eof.is_set, what="backend EOF")
    header, rest = pp.decode(bytes(record.received))
    assert (header.src_addr, header.src_port) == ("203.0.113.9", 4000)
    assert (header.dst_addr, header.dst_port) == ("192.0.2.1", 443)
    assert header.tlv(pp.PP2_TYPE_AUTHORITY) == NAME.encode()
    assert rest == hello
    assert "peer=203.0.113.9:4000" in line_with(tunnel, "passthrough=yes")
