"""The admin HTTP endpoint of the supervisor: /metrics, /healthz, /readyz.

Theory of operation
-------------------
The supervisor runs one single-threaded loop (signals, worker reports, this endpoint), so
nothing here may block it: sockets are non-blocking, each client gets a deadline
(:data:`CLIENT_SECONDS`) to send its request and take the reply, requests are capped at
:data:`MAX_REQUEST` bytes, and at most :data:`MAX_CLIENTS` are served at once (more are
closed on accept). The protocol is minimal HTTP/1.0: one GET per connection, then close.
What to answer comes from a callback, so this module knows nothing of metrics.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.config import Address

CLIENT_SECONDS = 5.0
MAX_REQUEST = 8192
MAX_CLIENTS = 32

Response = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[str], Response]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


@dataclass(slots=True)
class _Client:
    sock: socket.socket
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytes = b""
    sent: int = 0


def parse_request(data: bytes) -> tuple[str, str] | None:
    """``(method, path)`` of the request line, or None when it is malformed."""
    line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii").split("?", 1)[0]
    except UnicodeDecodeError:
        return None


def http_response(status: int, content_type: str, body: bytes) -> bytes:
    """An HTTP/1.0 response with ``Connection: close``."""
    head = (
        f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class AdminServer:
    """Non-blocking HTTP/1.0 endpoint driven by the supervisor's select loop."""

    def __init__(self, address: Address, handler: Handler) -> None:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((address.host, address.port))
            self.listener.listen(64)
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.handler = handler
        self.clients: dict[int, _Client] = {}

    def readers(self) -> list[socket.socket]:
        """Sockets to watch for reading."""
        return [self.listener] + [c.sock for c in self.clients.values() if not c.outbuf]

    def writers(self) -> list[socket.socket]:
        """Sockets to watch for writing."""
        return [c.sock for c in self.clients.values() if c.outbuf]

    def readable(self, sock: socket.socket) -> None:
        """``sock`` (one of :meth:`readers`) is readable."""
        if sock is self.listener:
            self._accept()
            return
        client = self.clients.get(sock.fileno())
        if client is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.inbuf += data
        if b"\r\n\r\n" in client.inbuf or b"\n\n" in client.inbuf or not data:
            self._answer(client)
        elif len(client.inbuf) > MAX_REQUEST:
            client.outbuf = http_response(400, "text/plain", b"request too large\n")
            self.writable(sock)

    def writable(self, sock: socket.socket) -> None:
        """``sock`` (one of :meth:`writers`) is writable."""
        client = self.clients.get(sock.fileno())
        if client is None:
            return
        try:
            client.sent += sock.send(client.outbuf[client.sent :])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if client.sent >= len(client.outbuf):
            self._drop(client)

    def expire(self, now: float | None = None) -> None:
        """Close clients past their deadline (slow or stuck readers and writers)."""
        now = time.monotonic() if now is None else now
        for client in [c for c in self.clients.values() if c.deadline < now]:
            self._drop(client)

    def close(self) -> None:
        """Close the listening socket and every client."""
        for client in list(self.clients.values()):
            self._drop(client)
        self.listener.close()

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: try again on the next readiness
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            self.clients[sock.fileno()] = _Client(sock, time.monotonic() + CLIENT_SECONDS)

    def _answer(self, client: _Client) -> None:
        request = parse_request(bytes(client.inbuf))
        if request is None:
            status, ctype, body = 400, "text/plain", b"bad request\n"
        elif request[0] not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", b"only GET\n"
        else:
            status, ctype, body = self.handler(request[1])
            if request[0] == "HEAD":
                body = b""
        client.outbuf = http_response(status, ctype, body)
        self.writable(client.sock)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()
