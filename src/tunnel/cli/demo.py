"""The ``tunnel demo`` pieces: a self-signed certificate and a tiny HTTP backend.

* :func:`make_self_signed` creates an ECDSA P-256 certificate and key (with
  ``cryptography``) as one combined PEM; :func:`write_private_file` stores it with mode
  0600, never overwriting unless asked to.
* :func:`start_backend` forks a small plaintext HTTP/1.1 server listening on a Unix
  socket. Tunnel connects to it with ``proxy_protocol = v2``; the backend decodes that
  header (client address, and the TLVs with ALPN, SNI and the TLS version and cipher) and
  answers every request with a page showing what Tunnel saw.
* :func:`demo_config` is the in-code configuration that joins the two.

This module does not print: the CLI tells the user what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import html
import ipaddress
import logging
import os
import select
import signal
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tunnel._native.prctl import die_with_parent
from tunnel.config import Address, Config, ListenerConfig, TunnelSettings
from tunnel.errors import TunnelError
from tunnel.wire import proxy_protocol

log = logging.getLogger("tunnel.demo")

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CERT_FILE = "demo.pem"
BACKEND_SOCKET = "demo-backend.sock"
DEMO_DRAIN_SECONDS = 3.0

_MAX_HEAD = 16 * 1024
_MAX_BODY = 1 << 20
_READ_SIZE = 16 * 1024
_IDLE_SECONDS = 120.0


# --------------------------------------------------------------------------- certificates


def state_dir() -> Path:
    """Tunnel's per-user state directory: ``$XDG_STATE_HOME/tunnel`` or ~/.local/state/tunnel."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec says to ignore relative values
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tunnel"


def default_cert_path() -> Path:
    """Where ``tunnel demo`` and ``tunnel gen-cert`` keep the demo certificate."""
    return state_dir() / CERT_FILE


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_self_signed(names: Sequence[str] = DEFAULT_NAMES, days: int = 365) -> bytes:
    """A self-signed ECDSA P-256 certificate for ``names`` plus its key, as one PEM.

    Names that parse as IP addresses become IP SAN entries, the others DNS names.
    """
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    sans = [_san_entry(name) for name in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem


def write_private_file(path: Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 (parent directories 0700 when created).

    Raises FileExistsError if ``path`` exists and ``force`` is false. With ``force`` the
    file is replaced atomically.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_demo_cert() -> tuple[Path, bool]:
    """Create the demo certificate if it does not exist; return its path and if it was made."""
    path = default_cert_path()
    if path.exists():
        return path, False
    try:
        write_private_file(path, make_self_signed())
    except FileExistsError:  # made by a concurrent demo meanwhile
        return path, False
    return path, True


# --------------------------------------------------------------------------- configuration


def demo_address(host: str, port: int) -> Address:
    """The demo's accept address; ValueError for a bad host or port."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c in host for c in "/ :"):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return Address("tcp", host=host, port=port)


def demo_config(accept: Address, cert: Path, backend_socket: Path) -> Config:
    """The in-code configuration of ``tunnel demo``: one worker, one listener."""
    listener = ListenerConfig(
        name="demo",
        accept=(accept,),
        cert=(str(cert),),
        key=None,
        connect=(Address("unix", path=str(backend_socket)),),
        proxy_protocol="v2",
    )
    settings = TunnelSettings(workers=1, drain_timeout=DEMO_DRAIN_SECONDS)
    return Config(path="<demo>", tunnel=settings, listeners=(listener,))


# --------------------------------------------------------------------------- the backend


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


class BadRequest(Exception):
    """The client's request cannot be served; ``status`` says why."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class Request:
    """The parts of an HTTP request the demo page needs."""

    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer (HTTP/1.1 rules)."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    def wants_html(self) -> bool:
        """Whether the client prefers HTML (browsers) over plain text (curl)."""
        return "text/html" in self.headers.get("accept", "")


def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (the bytes before the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("400 Bad Request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("400 Bad Request")
        headers[name.lower()] = value.strip()
    return Request(parts[0], parts[1], parts[2], headers)


def _body_length(request: Request) -> int:
    if "transfer-encoding" in request.headers:
        raise BadRequest("411 Length Required")
    text = request.headers.get("content-length", "0")
    if not text.isdigit():
        raise BadRequest("400 Bad Request")
    length = int(text)
    if length > _MAX_BODY:
        raise BadRequest("413 Content Too Large")
    return length


def render_page(seen: Seen, request: Request) -> tuple[str, bytes]:
    """The demo page for a request: content type and body."""
    rows = [*seen.rows(), ("request", f"{request.method} {request.target} {request.version}")]
    if request.wants_html():
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


def _response(status: str, content_type: str, body: bytes, *, head: bool, close: bool) -> bytes:
    head_lines = [
        f"HTTP/1.1 {status}",
        "Server: tunnel-demo",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        f"Connection: {'close' if close else 'keep-alive'}",
    ]
    payload = ("\r\n".join(head_lines) + "\r\n\r\n").encode()
    return payload if head else payload + body


class _Buffered:
    """A StreamReader plus bytes already read past the point the caller consumed."""

    def __init__(self, reader: asyncio.StreamReader, initial: bytes = b"") -> None:
        self.reader = reader
        self.buf = bytearray(initial)

    async def fill(self) -> bool:
        """Read more; False at EOF."""
        async with asyncio.timeout(_IDLE_SECONDS):
            data = await self.reader.read(_READ_SIZE)
        self.buf += data
        return bool(data)

    async def head(self) -> bytes | None:
        """The next request head, or None at a clean EOF between requests."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise BadRequest("431 Request Header Fields Too Large")
            if not await self.fill():
                if self.buf.strip():
                    raise BadRequest("400 Bad Request")
                return None
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        return head

    async def skip(self, length: int) -> None:
        """Discard a request body of ``length`` bytes."""
        while len(self.buf) < length:
            if not await self.fill():
                raise BadRequest("400 Bad Request")
        del self.buf[:length]


async def _read_proxy_header(reader: asyncio.StreamReader) -> tuple[Seen, _Buffered]:
    decoder = proxy_protocol.ProxyDecoder()
    while True:
        async with asyncio.timeout(_IDLE_SECONDS):
            data = await reader.read(_READ_SIZE)
        if not data:
            raise BadRequest("400 Bad Request")
        header = decoder.feed(data)
        if isinstance(header, proxy_protocol.ProxyHeader):
            return Seen.from_header(header), _Buffered(reader, decoder.rest)


async def _serve_requests(conn: _Buffered, seen: Seen, writer: asyncio.StreamWriter) -> None:
    while (head := await conn.head()) is not None:
        request = parse_head(head)
        await conn.skip(_body_length(request))
        seen.requests += 1
        content_type, body = render_page(seen, request)
        close = not request.keep_alive()
        writer.write(
            _response("200 OK", content_type, body, head=request.method == "HEAD", close=close)
        )
        await writer.drain()
        if close:
            return


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one connection from Tunnel: PROXY v2 header, then HTTP/1.1 requests."""
    try:
        seen, conn = await _read_proxy_header(reader)
        await _serve_requests(conn, seen, writer)
    except BadRequest as exc:
        body = f"{exc.status}\n".encode()
        writer.write(_response(exc.status, "text/plain", body, head=False, close=True))
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
