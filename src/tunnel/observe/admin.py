"""The admin HTTP endpoint of the supervisor: /metrics, /healthz, /readyz.

Theory of operation
-------------------
The supervisor runs one single-threaded loop (signals, worker reports, this endpoint), so
nothing here may block it: sockets are non-blocking, each client gets a deadline
(:data:`CLIENT_SECONDS`) to send its request and take the reply, requests are capped at
:data:`MAX_REQUEST` bytes, and at most :data:`MAX_CLIENTS` are served at once (more are
closed on accept). The protocol is minimal HTTP/1.0: one GET or HEAD per connection, then
close; requests are parsed by :mod:`tunnel.wire.http1`. What to answer comes from a
callback, so this module knows nothing of metrics.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.config import Address
from tunnel.wire.http1 import HTTPError, Request, RequestParser, error_response, response

CLIENT_SECONDS = 5.0
MAX_REQUEST = 8192
MAX_CLIENTS = 32

Response = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[str], Response]
VERSION = "HTTP/1.0"


@dataclass(slots=True)
class _Client:
    sock: socket.socket
    deadline: float
    parser: RequestParser = field(default_factory=lambda: RequestParser(MAX_REQUEST, 0))
    outbuf: bytes = b""
    sent: int = 0


def answer(request: Request, handler: Handler) -> bytes:
    """The response to one parsed request: ``handler`` serves GET, and HEAD without body."""
    if request.method not in ("GET", "HEAD"):
        return response(
            405, b"only GET and HEAD\n", version=VERSION, headers=[("Allow", "GET, HEAD")]
        )
    status, content_type, body = handler(request.path)
    return response(status, body, content_type=content_type, method=request.method, version=VERSION)


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
        try:
            client.parser.feed(data)
            request = client.parser.next_request()
            if request is None and not data:
                client.parser.finish()  # 400 if the peer cut a request off
                self._drop(client)  # closed before sending anything
                return
        except HTTPError as exc:
            client.outbuf = error_response(exc, version=VERSION)
        else:
            if request is None:
                return  # wait for the rest
            client.outbuf = answer(request, self.handler)
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

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()
