"""TLS to backends, the relay and the failures: the same on both planes.

Half-close both ways (close_notify each way, large transfers through back-pressure), the
PROXY header sent in plaintext before every handshake (also on failover), and the close
reason of each way a backend handshake can fail. test_backend_tls.py covers verification,
SNI, client certificates and the failure's WARNING and metric.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    ConnRecord,
    TunnelFactory,
    recv_exactly,
    wait_until,
)
from .tls_backends import (
    GREETING,
    REPLY,
    UPLOAD,
    BioServer,
    greets_then_reads,
    on_plane,
    reads_then_replies,
    server_ctx,
    summary,
    tls_section,
    untrusted_ctx,
)

pytestmark = pytest.mark.timeout(60)

MISMATCH = "Hostname mismatch, certificate is not valid"  # CPython's words, kept by C


def test_client_close_notify_first_then_a_large_reply(
    certs: Certs, ca_file: Path, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Client close_notify -> backend close_notify (+FIN); the reply still flows back."""
    got: list[bytes] = []
    backend = start_backend(reads_then_replies(certs, got))
    tunnel = start_tunnel(
        None, backend="b", extra={"backend:b": tls_section(backend.address, ca_file)}
    )
    on_plane(tunnel)
    client = BioClient(certs.client_context(), (tunnel.host, tunnel.port))
    client.handshake()
    client.send(UPLOAD)
    client.close_notify()
    assert client.recv_all() == REPLY
    client.close()
    wait_until(lambda: got, what="the backend's read")
    assert got[0] == UPLOAD
    line = summary(tunnel)
    assert 'reason="done"' in line
    assert f"in={len(UPLOAD)} out={len(REPLY)}" in line


def test_backend_close_notify_first_client_keeps_sending(
    certs: Certs, ca_file: Path, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Backend close_notify -> client close_notify; the client then uploads 1 MiB."""
    got: list[bytes] = []
    backend = start_backend(greets_then_reads(certs, got))
    tunnel = start_tunnel(
        None, backend="b", extra={"backend:b": tls_section(backend.address, ca_file)}
    )
    on_plane(tunnel)
    client = BioClient(certs.client_context(), (tunnel.host, tunnel.port))
    client.handshake()
    assert client.recv_all() == GREETING
    client.send(UPLOAD)
    client.close_notify()
    wait_until(lambda: got, what="the upload at the backend")
    assert got[0] == UPLOAD
    assert client.recv(10) == b""
    client.close()
    assert 'reason="done"' in summary(tunnel)


def test_the_proxy_header_goes_in_plaintext_before_every_handshake(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """Failover after a failed handshake sends the header again, to the next address."""
    headers: list[bytes] = []

    def proxied(ctx: ssl.SSLContext) -> Any:
        def handler(record: ConnRecord) -> None:
            line = b""
            while not line.endswith(b"\r\n"):
                line += record.sock.recv(1)
            headers.append(line)
            with (
                contextlib.suppress(ssl.SSLError, OSError),
                ctx.wrap_socket(record.sock, server_side=True) as sock,
            ):
                while data := sock.recv(65536):
                    sock.sendall(data)

        return handler

    bad = start_backend(proxied(untrusted_ctx(tmp_path)))
    good = start_backend(proxied(server_ctx(certs)))
    section = tls_section([bad.address, good.address], ca_file, proxy_protocol="v1")
    tunnel = start_tunnel(None, backend="b", extra={"backend:b": section})
    on_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
    assert len(headers) == 2
    assert all(
        re.fullmatch(rb"PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\n", h) for h in headers
    )


def silent(record: ConnRecord) -> None:
    record.read_to_end()  # never answers the ClientHello


def closes(record: ConnRecord) -> None:
    record.sock.recv(65536)  # the ClientHello (left unread, it would make our close an RST)
    record.sock.shutdown(socket.SHUT_WR)
    record.read_to_end()


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("mismatch", f"TLS handshake failed: {MISMATCH} for 'wrong.example'."),
        ("closed", "closed during the TLS handshake"),
        ("silent", "connect timed out"),
    ],
)
def test_a_failed_backend_handshake_names_why(
    kind: str,
    why: str,
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """The client gets a clean close; the log line says why the backend was unreachable."""
    handler: Any = {"silent": silent, "closes": closes, "closed": closes}.get(kind)
    if handler is None:

        def handler(record: ConnRecord) -> None:
            with contextlib.suppress(ssl.SSLError, OSError):
                server_ctx(certs).wrap_socket(record.sock, server_side=True).recv(1)

    backend = start_backend(handler)
    section = tls_section(backend.address, ca_file)
    if kind == "mismatch":
        section["sni"] = "wrong.example"
    tunnel = start_tunnel(None, backend="b", extra={"backend:b": section})
    on_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        assert sock.recv(10) == b""  # close_notify, no data
    line = summary(tunnel)
    assert f'reason="backend unreachable: {backend.address}: {why}"' in line, line
    assert f"backend={backend.address}" in line


def test_a_bad_record_from_the_backend_is_a_backend_tls_error(
    certs: Certs, ca_file: Path, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    done = threading.Event()

    def handler(record: ConnRecord) -> None:
        server = BioServer(record.sock, server_ctx(certs))
        server.send(GREETING)
        record.sock.sendall(b"\x17\x03\x03\x00\x20" + bytes(32))  # not from this session
        done.wait(10)

    backend = start_backend(handler)
    tunnel = start_tunnel(
        None, backend="b", extra={"backend:b": tls_section(backend.address, ca_file)}
    )
    on_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        assert recv_exactly(sock.recv, len(GREETING)) == GREETING
        assert sock.recv(10) == b""
    done.set()
    assert 'reason="backend TLS error: decryption failed or bad record mac"' in summary(tunnel)


@pytest.mark.parametrize("where", ["name", "unix"])
def test_the_server_name_of_a_named_or_unix_backend(
    where: str,
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """A host name is resolved, yet the name (not the address) is sent and verified; a
    Unix socket backend sends and verifies its ``sni``."""
    names: list[str | None] = []
    ctx = server_ctx(certs)
    ctx.sni_callback = lambda _obj, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value,misc]

    def handler(record: ConnRecord) -> None:
        with (
            contextlib.suppress(ssl.SSLError, OSError),
            ctx.wrap_socket(record.sock, server_side=True) as sock,
        ):
            while data := sock.recv(65536):
                sock.sendall(data)

    if where == "unix":
        backend = start_backend(handler, unix_path=tmp_path / "tls.sock")
        section = tls_section(backend.address, ca_file, sni="localhost")
    else:
        backend = start_backend(handler)
        section = tls_section(f"localhost:{backend.port}", ca_file)
    tunnel = start_tunnel(None, backend="b", extra={"backend:b": section})
    on_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"name")
        assert recv_exactly(sock.recv, 4) == b"name"
    assert names == ["localhost"]
    assert 'reason="done"' in summary(tunnel)


def test_a_backend_key_log_shared_with_tls_health_checks(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """The health checks' own TLS (CPython's SSL objects) and the relayed connections
    (C's on the compiled plane) write to one key log through one context's callback."""
    ctx = server_ctx(certs)

    def handler(record: ConnRecord) -> None:
        with (
            contextlib.suppress(ssl.SSLError, OSError),
            ctx.wrap_socket(record.sock, server_side=True) as sock,
        ):
            while data := sock.recv(65536):
                sock.sendall(data)

    backend = start_backend(handler)
    keylog = tmp_path / "backend-keys.log"
    section = tls_section(
        backend.address,
        ca_file,
        keylog_file=str(keylog),
        health_check="tls",
        health_interval="1s",
    )
    tunnel = start_tunnel(None, backend="b", extra={"backend:b": section})
    on_plane(tunnel)
    for _ in range(2):
        with tunnel.connect(certs.client_context()) as sock:
            sock.sendall(b"keys")
            assert recv_exactly(sock.recv, 4) == b"keys"
        seen = len(backend.records)
        wait_until(lambda: len(backend.records) > seen, what="a health check")  # noqa: B023
    secrets = [x for x in keylog.read_text().splitlines() if not x.startswith("#")]
    assert sum(x.startswith("CLIENT_TRAFFIC_SECRET_0 ") for x in secrets) >= 4
    assert "Traceback" not in tunnel.log() and "restarting" not in tunnel.log()
