"""What the TLS-backend tests share (test_backend_tls.py, test_backend_tls_relay.py,
test_client_mode.py): a TLS backend over memory BIOs that can half-close, the contexts
and config sections they use, and the summary line of a connection."""

from __future__ import annotations

import contextlib
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme
from harness.planes import expect_plane

from .harness import Certs, ConnRecord, pattern, wait_until

REPLY = pattern(3 * 1024 * 1024 + 17, 3)  # larger than every socket buffer on the way
UPLOAD = pattern(1024 * 1024 + 5, 5)
GREETING = b"greeting from the TLS backend\n"


class BioServer:
    """The backend's TLS over memory BIOs: it can send close_notify and go on reading."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
        self.incoming.write(data)

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), 65536):
            self.obj.write(data[i : i + 65536])
            self._flush()

    def recv_all(self) -> bytes:
        """Everything until the peer's close_notify (read() may say it with b"")."""
        parts = []
        while True:
            try:
                data = self.obj.read(65536)
                if not data:
                    return b"".join(parts)
                parts.append(data)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                return b"".join(parts)

    def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        self._flush()


def server_ctx(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert_path, certs.key_path)
    return ctx


def tls_section(address: str | list[str], ca: Path, **more: str) -> dict[str, Any]:
    return {"connect": address, "tls": "yes", "ca": str(ca), "connect_timeout": "1s"} | more


def untrusted_ctx(tmp_path: Path) -> ssl.SSLContext:
    """A backend's server context whose certificate no CA the tunnel trusts signed."""
    other = trustme.CA().issue_cert("localhost", "127.0.0.1")
    bad_pem = tmp_path / "bad.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(bad_pem))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(bad_pem)
    return ctx


def reads_then_replies(certs: Certs, got: list[bytes]) -> Callable[[ConnRecord], None]:
    """A backend that reads to the client's close_notify, then sends REPLY and its own."""

    def handler(record: ConnRecord) -> None:
        server = BioServer(record.sock, server_ctx(certs))
        got.append(server.recv_all())
        server.send(REPLY)
        server.close_notify()
        record.sock.close()

    return handler


def greets_then_reads(certs: Certs, got: list[bytes]) -> Callable[[ConnRecord], None]:
    """A backend that sends GREETING and close_notify first, then reads what still comes."""

    def handler(record: ConnRecord) -> None:
        server = BioServer(record.sock, server_ctx(certs))
        server.send(GREETING)
        server.close_notify()
        got.append(server.recv_all())

    return handler


def on_plane(tunnel: Any) -> None:
    """On a compiled run, the listener is served by the compiled plane."""
    expect_plane(tunnel)


def summary(tunnel: Any) -> str:
    line: str = wait_until(
        lambda: next((ln for ln in tunnel.log().splitlines() if "reason=" in ln), None),
        what="the summary line",
    )
    return line


def tls_echo(ctx: ssl.SSLContext, seen: list[dict[str, Any]]) -> Callable[[ConnRecord], None]:
    """A backend handler: TLS server, echo until close_notify, note what it saw."""

    def handler(record: ConnRecord) -> None:
        try:
            sock = ctx.wrap_socket(record.sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            seen.append({"error": str(exc)})
            return
        with sock:
            seen.append(
                {"version": sock.version(), "peer": sock.getpeercert(), "sni": server_names[-1:]}
            )
            while data := sock.recv(65536):
                sock.sendall(data)
            with contextlib.suppress(OSError, ValueError):
                sock.unwrap()

    server_names: list[str | None] = []
    ctx.sni_callback = lambda _obj, name, _ctx: server_names.append(name)  # type: ignore[assignment,func-returns-value,misc]
    return handler


def server_context(
    certs: Certs, version: str, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert_path, certs.key_path)
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, f"TLSv1_{version[-1]}")
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def tls_failures(admin: int, address: str) -> float:
    """The tunnel's count of TLS failures of the backend ``address`` (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    line = f'tunnel_backend_connect_failures_total{{backend="{address}",kind="tls"}}'
    found = [row.split()[-1] for row in text.splitlines() if row.startswith(line)]
    return float(found[0]) if found else 0.0
