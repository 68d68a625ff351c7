"""PROXY header to the backend: decoded by our own decoder, and by nginx and HAProxy."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from pathlib import Path

import pytest

from tunnel.wire import proxy_protocol as pp

from .harness import (
    BackendFactory,
    Certs,
    ConnRecord,
    TunnelFactory,
    TunnelProcess,
    refusing_address,
    wait_until,
)
from .peers import haproxy_proxy_backend, needs_haproxy, needs_nginx, nginx_proxy_backend

pytestmark = pytest.mark.timeout(60)


def closing_recorder(record: ConnRecord) -> None:
    """Keep everything received; on EOF shut down writing too."""
    record.read_to_end()
    record.sock.shutdown(socket.SHUT_WR)


def http_get(tunnel: TunnelProcess, ctx: ssl.SSLContext) -> bytes:
    """One HTTP/1.0 request through the tunnel; the whole reply."""
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        reply = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except ssl.SSLEOFError:
                break
            if not data:
                break
            reply += data
    return bytes(reply)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_v2_header_with_every_option(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """v2 with CRC32C and UNIQUE_ID: addresses, ALPN, SNI, SSL TLV; the uid is logged."""
    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(
        backend.address, proxy_protocol="v2", proxy_crc32c="yes", proxy_unique_id="yes"
    )
    ctx = certs.client_context(version)
    with tunnel.connect(ctx) as sock:
        client_port = sock.getsockname()[1]
        cipher = sock.cipher()
        assert cipher is not None
        sock.sendall(b"payload")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"payload"), what="payload at the backend")
        sock.unwrap()  # the backend sees EOF and half-closes too
    decoder = pp.ProxyDecoder()
    header = decoder.feed(bytes(record.received))  # the decoder checks the CRC32C
    assert isinstance(header, pp.ProxyHeader)
    assert decoder.rest == b"payload"
    assert (header.src_addr, header.src_port) == ("127.0.0.1", client_port)
    assert (header.dst_addr, header.dst_port) == tunnel.address
    assert header.tlv(pp.PP2_TYPE_ALPN) is None  # none negotiated (the unit tests cover it)
    assert header.tlv(pp.PP2_TYPE_AUTHORITY) == b"localhost"
    assert header.tlv(pp.PP2_TYPE_CRC32C) is not None
    uid = header.tlv(pp.PP2_TYPE_UNIQUE_ID)
    assert uid is not None and len(uid) == 16
    info = header.ssl_info()
    assert info is not None and info.ssl and not info.cert_conn
    assert (info.version, info.cipher) == (f"TLSv{version}", cipher[0])
    line = wait_until(lambda: tunnel.conn_lines(), what="summary line")[0]
    assert f"uid={uid.hex()}" in line


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_v2_alpn_tlv_reaches_the_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The protocol negotiated with the client travels in PP2_TYPE_ALPN."""
    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(backend.address, proxy_protocol="v2", alpn="h2, http/1.1")
    ctx = certs.client_context(version)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tunnel.connect(ctx) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(b"PRI * HTTP/2.0")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"HTTP/2.0"), what="payload at the backend")
        sock.unwrap()
    decoder = pp.ProxyDecoder()
    header = decoder.feed(bytes(record.received))
    assert isinstance(header, pp.ProxyHeader)
    assert decoder.rest == b"PRI * HTTP/2.0"
    assert header.tlv(pp.PP2_TYPE_ALPN) == b"h2"
    info = header.ssl_info()
    assert info is not None and info.version == f"TLSv{version}"


def test_no_uid_is_logged_when_no_header_was_sent(
    certs: Certs, start_tunnel: TunnelFactory
) -> None:
    """Every backend address refused: no PROXY header went out, so no ``uid=``."""
    tunnel = start_tunnel(refusing_address(), proxy_protocol="v2", proxy_unique_id="yes")
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"x")
        with contextlib.suppress(ssl.SSLError, OSError):
            sock.recv(1)
    line = wait_until(lambda: next(iter(tunnel.conn_lines()), None), what="the log line")
    assert 'reason="backend unreachable: ' in line
    assert " uid=" not in line, line


def test_v1_header(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(closing_recorder)
    tunnel = start_tunnel(backend.address, proxy_protocol="v1", proxy_unique_id="yes")
    with tunnel.connect(certs.client_context()) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"x")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"x"), what="payload")
        sock.unwrap()
    assert bytes(record.received) == (
        f"PROXY TCP4 127.0.0.1 127.0.0.1 {port} {tunnel.port}\r\nx".encode()
    )


@needs_nginx
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nginx_reads_the_client_address(
    version: str, certs: Certs, start_tunnel: TunnelFactory, tmp_path: Path
) -> None:
    """nginx (listen ... proxy_protocol) sees and logs the TLS client's address and port."""
    with nginx_proxy_backend(tmp_path) as (port, access):
        tunnel = start_tunnel(f"127.0.0.1:{port}", proxy_protocol=version, proxy_crc32c="yes")
        reply = http_get(tunnel, certs.client_context())
        assert reply.startswith(b"HTTP/1.1 200"), reply
        body = reply.split(b"\r\n\r\n", 1)[1].decode()
        addr, client_port = body.split()
        assert addr == "127.0.0.1"
        line = wait_until(lambda: tunnel.conn_lines(), what="summary")[0]
        assert f"peer=127.0.0.1:{client_port} " in line
        wait_until(lambda: access.exists() and access.read_text(), what="nginx access log")
        assert access.read_text().startswith(f"127.0.0.1 {client_port} 127.0.0.1 ")


@needs_haproxy
def test_haproxy_reads_address_and_tlvs(
    certs: Certs, start_tunnel: TunnelFactory, tmp_path: Path
) -> None:
    """HAProxy (accept-proxy) decodes our v2 header: address, AUTHORITY, UNIQUE_ID, CRC32C."""
    fields = "src=%[src]:%[src_port] authority=%[fc_pp_authority] uid=%[fc_pp_unique_id,hex]"
    with haproxy_proxy_backend(tmp_path, fields) as port:
        tunnel = start_tunnel(
            f"127.0.0.1:{port}",
            proxy_protocol="v2",
            proxy_crc32c="yes",
            proxy_unique_id="yes",
        )
        reply = http_get(tunnel, certs.client_context())
        assert reply.startswith(b"HTTP/1.1 200"), reply
        body = reply.split(b"\r\n\r\n", 1)[1].decode().strip()
        match = re.fullmatch(r"src=127\.0\.0\.1:(\d+) authority=localhost uid=([0-9A-F]{32})", body)
        assert match, body
        line = wait_until(lambda: tunnel.conn_lines(), what="summary")[0]
        assert f"peer=127.0.0.1:{match[1]} " in line
        assert f"uid={match[2].lower()}" in line
