"""The demo's backend: a tiny plaintext HTTP/1.1 server in a forked process.

:func:`start_backend` forks it, listening on a Unix socket. Tunnel connects to it with
``proxy_protocol = v2``; the backend decodes that header (client address, and the TLVs
with ALPN, SNI and the TLS version and cipher) and answers every request (parsed by
:mod:`tunnel.wire.http1`) with a page showing what Tunnel saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import select
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from tunnel._native.prctl import die_with_parent
from tunnel.errors import TunnelError
from tunnel.wire import proxy_protocol
from tunnel.wire.http1 import HTTPError, Request, RequestParser, error_response, response

log = logging.getLogger("tunnel.demo")

_READ_SIZE = 16 * 1024
_IDLE_SECONDS = 120.0
_HEADERS = (("Server", "tunnel-demo"), ("Cache-Control", "no-store"))


@dataclass(slots=True)
class Seen:
    """What the PROXY v2 header told the backend about one client connection."""

    client: str = "-"
    port: str = "-"
    tls_version: str = "-"
    cipher: str = "-"
    sni: str = "-"
    alpn: str = "-"
    requests: int = 0

    @classmethod
    def from_header(cls, header: proxy_protocol.ProxyHeader) -> Seen:
        """Pick the client address and TLS facts out of a decoded PROXY header."""
        seen = cls()
        if header.src_addr is not None:
            seen.client = header.src_addr
            seen.port = str(header.src_port)
        ssl_info = header.ssl_info()
        if ssl_info is not None:
            seen.tls_version = ssl_info.version or "-"
            seen.cipher = ssl_info.cipher or "-"
        seen.sni = _text(header.tlv(proxy_protocol.PP2_TYPE_AUTHORITY))
        seen.alpn = _text(header.tlv(proxy_protocol.PP2_TYPE_ALPN))
        return seen

    def rows(self) -> list[tuple[str, str]]:
        """Label/value pairs for the page."""
        return [
            ("client address", self.client),
            ("client port", self.port),
            ("TLS version", self.tls_version),
            ("cipher", self.cipher),
            ("SNI", self.sni),
            ("ALPN", self.alpn),
            ("request # on this connection", str(self.requests)),
        ]


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else "-"


def _wants_html(request: Request) -> bool:
    """Whether the client prefers HTML (browsers) over plain text (curl)."""
    return "text/html" in request.headers.get("accept", "")


def render_page(seen: Seen, request: Request) -> tuple[str, bytes]:
    """The demo page for a request: content type and body."""
    rows = [*seen.rows(), ("request", f"{request.method} {request.target} {request.version}")]
    if _wants_html(request):
        cells = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Tunnel demo</title>"
            "</head><body><h1>Hello through Tunnel</h1><p>Tunnel terminated TLS and passed "
            "this request on in plain HTTP, with a PROXY v2 header saying what it saw:</p>"
            f"<table>{cells}</table></body></html>\n"
        )
        return "text/html; charset=utf-8", page.encode()
    width = max(len(k) for k, _ in rows)
    lines = "".join(f"  {k.ljust(width)}  {v}\n" for k, v in rows)
    page = (
        "Hello through Tunnel!\n\nTunnel terminated TLS and passed this request on in plain "
        f"HTTP,\nwith a PROXY v2 header saying what it saw:\n\n{lines}"
    )
    return "text/plain; charset=utf-8", page.encode()


async def _read(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(_IDLE_SECONDS):
        return await reader.read(_READ_SIZE)


async def _read_proxy_header(reader: asyncio.StreamReader) -> tuple[Seen, bytes] | None:
    """The PROXY v2 header's facts and the bytes after it; None at EOF before a header."""
    decoder = proxy_protocol.ProxyDecoder()
    while data := await _read(reader):
        header = decoder.feed(data)
        if isinstance(header, proxy_protocol.ProxyHeader):
            return Seen.from_header(header), decoder.rest
    return None


async def _serve_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen, first: bytes
) -> None:
    """Answer requests on one connection until the client closes or asks to close."""
    parser = RequestParser()
    data = first
    while True:
        parser.feed(data)
        while (request := parser.next_request()) is not None:
            seen.requests += 1
            content_type, body = render_page(seen, request)
            keep_alive = request.keep_alive()
            writer.write(
                response(
                    200,
                    body,
                    content_type=content_type,
                    method=request.method,
                    keep_alive=keep_alive,
                    headers=_HEADERS,
                )
            )
            await writer.drain()
            if not keep_alive:
                return
        if not (data := await _read(reader)):
            parser.finish()
            return


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one connection from Tunnel: PROXY v2 header, then HTTP/1.1 requests."""
    try:
        if (start := await _read_proxy_header(reader)) is not None:
            await _serve_requests(reader, writer, *start)
    except HTTPError as exc:
        writer.write(error_response(exc))
    except proxy_protocol.ProxyProtocolError as exc:
        log.warning("demo backend: bad PROXY header: %s", exc)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _serve_backend(sock: socket.socket) -> None:
    server = await asyncio.start_unix_server(handle_client, sock=sock)
    async with server:
        await server.serve_forever()


def bind_backend_socket(path: Path) -> socket.socket:
    """Bind the backend's Unix socket, replacing a stale one; TunnelError if one is live."""
    if len(os.fsencode(path)) > 107:
        raise TunnelError(f"{path}: path too long for a Unix socket; set a shorter XDG_STATE_HOME")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise TunnelError(f"{path} is in use: is another 'tunnel demo' running?")
    finally:
        probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _backend_child(sock: socket.socket) -> None:
    """Body of the forked backend process; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent()
        if os.getppid() == 1:
            os._exit(0)  # the parent died before prctl took effect
        asyncio.run(_serve_backend(sock))
    except BaseException:
        log.exception("demo backend failed")
        code = 1
    finally:
        os._exit(code)


@dataclass(slots=True)
class BackendProcess:
    """The forked demo backend; stop it with :meth:`stop`."""

    pid: int
    pidfd: int
    socket_path: Path

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the backend (by its pidfd, so never a recycled PID), wait, then SIGKILL."""
        try:
            for signo in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self.pidfd, signo)
                if select.select([self.pidfd], [], [], timeout)[0]:
                    break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        finally:
            os.close(self.pidfd)
            with contextlib.suppress(OSError):
                self.socket_path.unlink()


def start_backend(socket_path: Path) -> BackendProcess:
    """Fork the demo HTTP backend listening on ``socket_path`` (ready when this returns)."""
    sock = bind_backend_socket(socket_path)
    try:
        pid = os.fork()
        if pid == 0:
            _backend_child(sock)
        pidfd = os.pidfd_open(pid)
    finally:
        sock.close()
    return BackendProcess(pid, pidfd, socket_path)
