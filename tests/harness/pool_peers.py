"""Peers for the backend-pool tests: named backends that come and go, a small DNS server."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from .process import TunnelProcess


class NamedServer:
    """Answers every connection with its name, then closes; can stop and start again."""

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # a server context: TLS is spoken (for health_check = tls)
        self.host = host
        self.port = port
        self.open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.hold = False  # keep connections open (least-connections tests)
        self.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, args=(listener,), daemon=True)
        self._thread.start()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                if self.tls is not None:
                    sock.settimeout(5)
                    sock = self.tls.wrap_socket(sock, server_side=True)
                sock.sendall(self.name.encode())
                if self.hold:  # until the client (through Tunnel) closes
                    self.open.append(sock)
                    threading.Thread(target=_drain, args=(sock,), daemon=True).start()
                    continue
                sock.shutdown(socket.SHUT_WR)
            sock.close()

    def stop(self) -> None:
        """Close the listening socket: connects are refused from now on."""
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in self.open:
            sock.close()
        self.open.clear()


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass
        sock.close()


def who(tunnel: TunnelProcess, ctx: ssl.SSLContext) -> str:
    """The name of the backend that served one connection ('' if none did)."""
    with tunnel.connect(ctx) as sock:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(100):
                data += chunk
    return data.decode()


class DNSServer:
    """A UDP DNS server on loopback answering from ``records``: (name, type) -> (ttl, texts).

    Counts the queries it gets per (name, type), so tests see when Tunnel asks again.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.queries: Counter[tuple[str, str]] = Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def set(self, name: str, rdtype: str, ttl: int, *texts: str) -> None:
        self.records[(name.rstrip(".").lower(), rdtype)] = (ttl, list(texts))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries[(name, rdtype)] += 1
            found = self.records.get((name, rdtype))
            if found is not None:
                ttl, texts = found
                reply.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rdtype, *texts))
            elif not any(n == name for n, _ in self.records):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            with contextlib.suppress(OSError):
                self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def dns_server() -> Iterator[DNSServer]:
    server = DNSServer()
    try:
        yield server
    finally:
        server.close()
