"""Plain TCP (or Unix) backends in threads, and the handlers that serve their connections.

:class:`Backend` accepts in a thread and runs ``handler(record)`` for each connection in
its own thread; the :class:`ConnRecord` tells the test what the backend saw (data, EOF,
reset, timings). A handler that only wants the socket is wrapped by :func:`on_socket`.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .net import MiB, abort, chunks, pattern, recv_exactly
from .waits import wait_until


@dataclass
class ConnRecord:
    """What a backend saw on one accepted connection."""

    sock: socket.socket
    accepted_at: float = field(default_factory=time.monotonic)
    received: bytearray = field(default_factory=bytearray)
    bytes_received: int = 0
    bytes_sent: int = 0
    eof: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None
    error: BaseException | None = None
    blocked: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)

    def recv(self, n: int = 65536, keep: bool = True) -> bytes:
        """Receive from the client side; note EOF (b"") and keep the data if asked."""
        data = self.sock.recv(n)
        if data:
            self.bytes_received += len(data)
            if keep:
                self.received += data
        else:
            self.eof.set()
        return data

    def read_to_end(self, keep: bool = True) -> None:
        """Receive until EOF or an error, noting when and how it ended."""
        try:
            while self.recv(MiB, keep):
                pass
        except OSError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()


Handler = Callable[[ConnRecord], None]
SocketHandler = Callable[[socket.socket], None]


class Backend:
    """A plain TCP (or Unix) server in a thread; each connection handled in its own thread."""

    def __init__(
        self, handler: Handler, unix_path: Path | None = None, backlog: int = 128, port: int = 0
    ):
        self.handler = handler
        self.records: list[ConnRecord] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if unix_path is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(unix_path))
            self.address = f"unix:{unix_path}"
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A restarted backend (same port) must not wait for TIME_WAIT to pass, and may
            # listen on a port that harness.net.reserve_port holds.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.listener.bind(("127.0.0.1", port))
            self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.listener.getsockname()[1])

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            record = ConnRecord(sock)
            self.records.append(record)
            thread = threading.Thread(target=self._serve, args=(record,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, record: ConnRecord) -> None:
        try:
            self.handler(record)
        except OSError as exc:
            if record.error is None:
                record.error = exc
        finally:
            record.done.set()

    def wait_connections(self, n: int, timeout: float = 5.0) -> list[ConnRecord]:
        """Wait until ``n`` connections were accepted; return their records."""
        wait_until(lambda: len(self.records) >= n, timeout, what=f"{n} backend connection(s)")
        return self.records[:n]

    def close(self) -> None:
        """Stop accepting, shut every connection down, join the threads (bounded)."""
        self._stop.set()
        self._accepter.join(timeout=2)
        self.listener.close()
        for record in self.records:
            record.closing.set()
            with contextlib.suppress(OSError):
                record.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=2)
        for record in self.records:
            record.sock.close()


class BackendFactory:
    """Starts backends (``factory(handler, unix_path=None)``) and closes them all at the end."""

    def __init__(self) -> None:
        self.backends: list[Backend] = []

    def __call__(
        self, handler: Handler, unix_path: Path | None = None, backlog: int = 128, port: int = 0
    ) -> Backend:
        backend = Backend(handler, unix_path, backlog, port)
        self.backends.append(backend)
        return backend

    def close_all(self) -> None:
        """Close every backend."""
        for backend in self.backends:
            backend.close()


def on_socket(handler: SocketHandler) -> Handler:
    """A handler that gives ``handler`` the connection's socket and closes it afterwards."""

    def serve(record: ConnRecord) -> None:
        with record.sock, contextlib.suppress(OSError):
            handler(record.sock)

    return serve


class SocketBackend(Backend):
    """A backend whose ``handler(conn)`` gets each connection's socket, closed after the
    handler returns (the system tests' ``Backend``)."""

    def __init__(self, handler: SocketHandler, backlog: int = 128) -> None:
        super().__init__(on_socket(handler), backlog=backlog)


# Handlers ----------------------------------------------------------------------------


def echo_handler(record: ConnRecord) -> None:
    """Send back everything received; on EOF shut down writing (half-close)."""
    sock = record.sock
    while True:
        data = record.recv(MiB, keep=False)
        if not data:
            break
        sock.sendall(data)
        record.bytes_sent += len(data)
    sock.shutdown(socket.SHUT_WR)
    record.ended_at = time.monotonic()


def recording_handler(record: ConnRecord) -> None:
    """Keep everything received until EOF or an error."""
    record.read_to_end()


def sink_handler(record: ConnRecord) -> None:
    """Never read; hold the connection until the backend is closed."""
    record.closing.wait()


def reset_handler(record: ConnRecord) -> None:
    """Accept, then close at once with an RST."""
    abort(record.sock)


SENDER_LIMIT = 256 * MiB


def sender_handler(record: ConnRecord) -> None:
    """Send up to 256 MiB (so a failing test cannot eat the machine's memory); set
    ``blocked`` once a 1 MiB send makes no progress for 2 s."""
    sock = record.sock
    sock.settimeout(2.0)
    block = pattern(MiB, 7)
    try:
        while record.bytes_sent < SENDER_LIMIT:
            record.bytes_sent += sock.send(block)
    except TimeoutError:
        record.blocked.set()
    except OSError as exc:
        record.error = exc
    finally:
        record.ended_at = time.monotonic()


def read_request(conn: socket.socket) -> bytes:
    """Read an HTTP request head (up to the blank line)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def hello_handler(conn: socket.socket) -> None:
    """Answer one HTTP request with a short body and close (use with :func:`on_socket`)."""
    read_request(conn)
    body = b"hello from the backend\n"
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


# The "hash" protocol: the client sends a header ">QQ" (upload size, download size), then
# the upload. The backend answers sha256(upload), then the download (pseudo-random) and
# sha256(download), then waits for EOF. Both directions are thus verified by checksum.
HASH_HEADER = struct.Struct(">QQ")


def hash_handler(record: ConnRecord) -> None:
    """Serve one exchange of the hash protocol."""
    sock = record.sock
    header = recv_exactly(lambda n: record.recv(n, keep=False), HASH_HEADER.size)
    up_size, down_size = HASH_HEADER.unpack(header)
    digest = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    left = up_size
    while left:
        n = sock.recv_into(view, min(left, MiB))
        if not n:
            raise AssertionError(f"backend: EOF with {left} upload bytes missing")
        digest.update(view[:n])
        left -= n
    sock.sendall(digest.digest())
    digest = hashlib.sha256()
    for piece in chunks(down_size, seed=down_size ^ 0x5EED):
        digest.update(piece)
        sock.sendall(piece)
    sock.sendall(digest.digest())
    record.read_to_end(keep=False)


def hash_exchange(sock: ssl.SSLSocket, up_size: int, down_size: int, seed: int) -> None:
    """Client side of the hash protocol over ``sock``; assert both checksums."""
    sock.sendall(HASH_HEADER.pack(up_size, down_size))
    digest = hashlib.sha256()
    for piece in chunks(up_size, seed):
        digest.update(piece)
        sock.sendall(piece)
    assert recv_exactly(sock.recv, 32) == digest.digest(), "upload corrupted"
    digest = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    left = down_size
    while left:
        n = sock.recv_into(view, min(left, MiB))
        assert n, f"EOF with {left} download bytes missing"
        digest.update(view[:n])
        left -= n
    assert recv_exactly(sock.recv, 32) == digest.digest(), "download corrupted"
