"""HTTPS through Tunnel for the system tests: clients, a slow backend, a client loop.

The backends here are ``handler(conn)`` functions for the ``backend_factory`` fixture;
they speak just enough HTTP/1.1 for a response to be checked byte for byte.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from pathlib import Path

from .backends import read_request
from .tunnel import Running
from .waits import wait_for

HELLO = b"hello from the backend\n"
SLOW_CHUNK = 64 * 1024
SLOW_CHUNKS = 48  # 3 MiB, sent over about 1.5 s
SLOW_PAUSE = 0.03


def slow_body() -> bytes:
    """The deterministic body the slow backend sends."""
    return b"".join(
        hashlib.sha256(i.to_bytes(4, "big")).digest() * (SLOW_CHUNK // 32)
        for i in range(SLOW_CHUNKS)
    )


def _send_slowly(conn: socket.socket) -> None:
    body = slow_body()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    for offset in range(0, len(body), SLOW_CHUNK):
        conn.sendall(body[offset : offset + SLOW_CHUNK])
        time.sleep(SLOW_PAUSE)  # pacing the transfer, not synchronisation


def slow_handler(conn: socket.socket) -> None:
    """Answer a request with a large body, slowly, then close."""
    read_request(conn)
    _send_slowly(conn)


def routing_handler(conn: socket.socket) -> None:
    """``GET /slow`` gets the slow 3 MiB body; anything else a short hello."""
    head = read_request(conn)
    if not head.startswith(b"GET /slow"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(HELLO), HELLO))
        return
    _send_slowly(conn)


def tls_client(running: Running, timeout: float = 10.0) -> ssl.SSLSocket:
    """A verified TLS connection through Tunnel."""
    ctx = ssl.create_default_context(cafile=str(running.certs.ca_pem))
    raw = socket.create_connection(("127.0.0.1", running.port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_all(sock: ssl.SSLSocket, first: bytes = b"") -> bytes:
    """Read until the server closes."""
    chunks = [first]
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(port: int, ca_pem: Path) -> tuple[bytes, bytes]:
    """One fresh TLS connection: GET / and return (server certificate DER, response)."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        der = sock.getpeercert(binary_form=True) or b""
        return der, read_all(sock)


def start_slow_transfer_at(running: Running, path: str) -> tuple[ssl.SSLSocket, bytes]:
    """Request ``path`` from a slow backend and wait until part of the answer arrived."""
    sock = tls_client(running)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200 OK")
    return sock, received


def start_slow_transfer(running: Running) -> tuple[ssl.SSLSocket, bytes]:
    """Request the slow body and wait until part of it has arrived."""
    return start_slow_transfer_at(running, "/slow")


def handshake_possible(running: Running) -> bool:
    """Whether a new client can complete a TLS handshake within a second."""
    try:
        with tls_client(running, timeout=1):
            return True
    except OSError:
        return False


class ClientLoop:
    """Threads opening connections back to back; counts successes and failures."""

    def __init__(self, running: Running, threads: int = 6) -> None:
        self.running = running
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                _, response = fetch(self.running.port, self.running.certs.ca_pem)
                problem = "" if response.endswith(HELLO) else f"bad response {response[:80]!r}"
            except OSError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if problem:
                    self.failures.append(problem)
                else:
                    self.ok += 1

    def __enter__(self) -> ClientLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def wait_more(self, count: int) -> None:
        """Wait until ``count`` more connections have succeeded."""
        target = self.ok + count
        wait_for(
            f"{count} more successful connections", lambda: self.ok >= target or bool(self.failures)
        )
