"""ALPN negotiation and backend routing by SNI and ALPN, with failover per backend."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import pytest

from .harness import (
    Backend,
    BackendFactory,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    refusing_address,
)

pytestmark = pytest.mark.timeout(90)

VERSIONS = ["1.2", "1.3"]


def exchange(
    tunnel: TunnelProcess, version: str, sni: str | None, alpn: list[str] | None = None
) -> str | None:
    """One echo round trip; returns the negotiated ALPN protocol."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = getattr(
        ssl.TLSVersion, f"TLSv1_{version.split('.')[1]}"
    )
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with (
        socket.create_connection(tunnel.address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as sock,
    ):
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        return sock.selected_alpn_protocol()


def counts(*backends: Backend) -> list[int]:
    return [len(b.records) for b in backends]


@pytest.mark.parametrize("version", VERSIONS)
def test_routes_by_sni_then_alpn_then_default(
    version: str, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    default, api, web, grpc = (start_backend(echo_handler) for _ in range(4))
    dead = refusing_address()  # refuses: failover to the next address
    tunnel = start_tunnel(
        default.address,
        alpn="h2, http/1.1",
        route="sni:api.example.com=api, sni:*.example.com=web, alpn:h2=grpc",
        extra={
            "backend:api": {"connect": [dead, api.address]},
            "backend:web": {"connect": web.address},
            "backend:grpc": {"connect": grpc.address},
        },
    )
    assert exchange(tunnel, version, "api.example.com", ["h2"]) == "h2"
    assert counts(default, api, web, grpc) == [0, 1, 0, 0]
    assert exchange(tunnel, version, "www.example.com") is None
    assert counts(default, api, web, grpc) == [0, 1, 1, 0]
    assert exchange(tunnel, version, "localhost", ["h2", "http/1.1"]) == "h2"
    assert counts(default, api, web, grpc) == [0, 1, 1, 1]
    assert exchange(tunnel, version, "localhost", ["http/1.1"]) == "http/1.1"
    assert exchange(tunnel, version, "a.b.example.com", ["foo"]) is None
    assert counts(default, api, web, grpc) == [2, 1, 1, 1]
    lines = tunnel.conn_lines()
    assert any("sni=api.example.com alpn=h2" in line and api.address in line for line in lines)


def test_listener_backend_key(start_tunnel: TunnelFactory, start_backend: BackendFactory) -> None:
    shared = start_backend(echo_handler)
    tunnel = start_tunnel(
        None, backend="shared", extra={"backend:shared": {"connect": shared.address}}
    )
    exchange(tunnel, "1.3", "localhost")
    assert counts(shared) == [1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_resolve_routes_by_name(
    start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    def http(record):  # type: ignore[no-untyped-def]
        record.sock.recv(65536)
        record.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nAPI")
        record.sock.shutdown(socket.SHUT_WR)

    default = start_backend(echo_handler)
    api = start_backend(http)
    tunnel = start_tunnel(
        default.address,
        alpn="http/1.1",
        route="sni:api.example.com=api",
        extra={"backend:api": {"connect": api.address}},
    )
    port = tunnel.address[1]
    result = subprocess.run(
        [
            "curl",
            "-sk",
            "--http1.1",
            "--resolve",
            f"api.example.com:{port}:127.0.0.1",
            f"https://api.example.com:{port}/",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"API", result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_alpn(
    version: str, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, alpn="h2, http/1.1")
    host, port = tunnel.address
    flag = f"-tls1_{version.split('.')[1]}"
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", flag, "-alpn", "http/1.1,h2"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"ALPN protocol: h2" in result.stdout, result.stdout
