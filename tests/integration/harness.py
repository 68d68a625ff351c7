"""Integration-test harness: Tunnel in a child process, backends in threads, TLS clients.

* :class:`TunnelFactory` writes an ini file (short timeouts) and runs
  ``python -m tunnel run -c FILE`` in a child process; its stderr goes to a log file
  whose lines carry ``tunnel[PID]`` (so a connection maps to its worker). Every process
  is stopped by its PID in the fixture's finalizer.
* :class:`BackendFactory` runs a listening socket in a thread and each accepted
  connection's ``handler(record)`` in its own thread; :class:`ConnRecord` tells the
  test what the backend saw (data, EOF, reset, timings).
* :class:`BioClient` is a blocking TLS client over a raw socket and ``ssl.MemoryBIO``, so a
  test controls every byte (corrupt a record, half-close, read alerts).
* Nothing here sleeps to synchronise: :func:`wait_until` polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

MiB = 1 << 20
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# TLS record content types.
ALERT = 0x15
HANDSHAKE = 0x16
APPLICATION_DATA = 0x17


# --------------------------------------------------------------------------- utilities


def wait_until(
    condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns a truthy value (returned) or fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (bind to port 0, then release it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def has_ipv6_loopback() -> bool:
    """True when this machine can bind ``::1``."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """The child process ids of ``pid`` (from /proc/PID/task/PID/children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def pattern(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def chunks(total: int, seed: int, chunk: int = MiB) -> Iterator[memoryview]:
    """Yield ``total`` bytes of non-periodic data in pieces of at most ``chunk`` bytes.

    The pieces are windows at varying offsets of one 4 MiB random block, so that large
    transfers cost no generation time, yet a lost, duplicated or reordered piece changes
    the checksum.
    """
    block = memoryview(pattern(4 * MiB + chunk, seed))
    index = 0
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        offset = (index * 1_000_003) % (4 * MiB)
        yield block[offset : offset + n]
        sent += n
        index += 1


def recv_exactly(recv: Callable[[int], bytes], n: int) -> bytes:
    """Read exactly ``n`` bytes with ``recv``; fail on an early EOF."""
    parts = []
    while n:
        data = recv(min(n, MiB))
        if not data:
            raise AssertionError(f"EOF with {n} bytes still expected")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, str]:
    """Read a raw socket until the peer closes; return (bytes, "eof" | "reset" | "timeout")."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "reset"
        except TimeoutError:
            return bytes(data), "timeout"
        if not part:
            return bytes(data), "eof"
        data += part


def parse_records(data: bytes) -> list[tuple[int, bytes]]:
    """Split raw TLS bytes into (content type, payload) records (a partial tail is kept)."""
    records = []
    pos = 0
    while pos + 5 <= len(data):
        ctype = data[pos]
        (length,) = struct.unpack_from(">H", data, pos + 3)
        records.append((ctype, data[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return records


def abort(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    """A test CA and a server certificate for localhost, 127.0.0.1 and ::1."""

    ca: trustme.CA
    cert_path: Path
    key_path: Path

    def client_context(self, version: str | None = None) -> ssl.SSLContext:
        """A client context trusting the CA, pinned to one TLS version if given."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[version]
        return ctx


def make_certs(directory: Path) -> Certs:
    """A trustme CA and server certificate, written to ``directory`` (never committed)."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    server.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    server.private_key_pem.write_to_path(str(key_path))
    return Certs(ca, cert_path, key_path)


# --------------------------------------------------------------------------- tunnel process


class TunnelProcess:
    """One ``tunnel`` supervisor child process and its workers."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, workers: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.workers = workers
        self.known_pids: set[int] = set()
        self.port = 0
        self.host = "127.0.0.1"

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return (self.host, self.port)

    def log(self) -> str:
        """Everything the tunnel logged so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The current worker process ids."""
        pids = children(self.pid)
        self.known_pids.update(pids)
        return pids

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the supervisor logged its start and every worker serves."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"tunnel exited with {self.proc.returncode}:\n{self.log()}")
            text = self.log()
            pids = self.worker_pids()
            return (
                "tunnel started" in text
                and len(pids) >= self.workers  # more: an ACME process
                and all(f"worker {i} started" in text for i in range(self.workers))
            )

        wait_until(ready, timeout, what="tunnel start")

    def conn_lines(self) -> list[str]:
        """The per-connection summary lines logged so far."""
        return [line for line in self.log().splitlines() if " conn peer=" in line]

    def connect(self, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
        """A TLS client connection (``suppress_ragged_eofs`` off: a bare FIN raises)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        raw.connect(self.address)
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)

    def raw(self, timeout: float = 10.0) -> socket.socket:
        """A plain TCP connection to the listener."""
        return socket.create_connection(self.address, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM the supervisor, wait (bounded), then SIGKILL whatever is left, by PID."""
        pids = {*self.known_pids, *self.worker_pids()}
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def render_config(sections: dict[str, dict[str, Any]]) -> str:
    """Ini text from ``{section: {key: value}}`` (lists become comma separated)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            if isinstance(value, list | tuple):
                value = ", ".join(str(v) for v in value)
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def _limit_files(nofile: int) -> None:
    """In the child before exec: an open-files limit (soft and hard) of ``nofile``."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class TunnelFactory:
    """Starts ``tunnel run`` child processes and stops them all at the end of a test.

    ``start(connect, workers=1, host=..., tunnel={...}, extra={...}, nofile=None, **listener)``
    (``nofile``: an open-files limit for the tunnel process) writes an
    ini file with short defaults (handshake and connect timeouts 1 s, drain 1 s); listener
    keys given as keyword arguments override them (e.g. ``idle_timeout="1s"``; None drops
    a key) and ``extra`` adds sections (e.g. ``{"backend:api": {"connect": ...}}``).
    """

    def __init__(self, certs: Certs, directory: Path) -> None:
        self.certs = certs
        self.directory = directory
        self.started: list[TunnelProcess] = []

    def __call__(
        self,
        connect: str | list[str],
        *,
        workers: int = 1,
        host: str = "127.0.0.1",
        tunnel: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        nofile: int | None = None,
        **listener: Any,
    ) -> TunnelProcess:
        port = free_port(host)
        accept = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sections = {
            "tunnel": {
                "workers": workers,
                "log_level": "info",
                "drain_timeout": "1s",
                "allow_root": "yes",  # tests may run as root (CI does)
            }
            | (tunnel or {}),
            "test": {
                "accept": accept,
                "cert": str(self.certs.cert_path),
                "key": str(self.certs.key_path),
                "connect": connect,
                "handshake_timeout": "1s",
                "connect_timeout": "1s",
                "idle_timeout": "30s",
            }
            | listener,
            **(extra or {}),
        }
        # A listener keyword set to None drops that key (e.g. key=None with several certs).
        sections["test"] = {k: v for k, v in sections["test"].items() if v is not None}
        index = len(self.started)
        config_path = self.directory / f"tunnel{index}.ini"
        config_path.write_text(render_config(sections))
        log_path = self.directory / f"tunnel{index}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tunnel", "run", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(SRC)},
                preexec_fn=None if nofile is None else (lambda: _limit_files(nofile)),
            )
        tunnel_proc = TunnelProcess(proc, log_path, workers)
        tunnel_proc.port = port
        tunnel_proc.host = host
        self.started.append(tunnel_proc)
        tunnel_proc.wait_ready()
        return tunnel_proc

    def stop_all(self) -> None:
        """Stop every tunnel this factory started."""
        for proc in self.started:
            proc.stop()

    def check_logs(self) -> None:
        """Fail if any tunnel logged a traceback or lost a worker (a crash hidden by a
        restart would otherwise go unnoticed)."""
        for proc in self.started:
            text = proc.log()
            for marker in ("Traceback", "restarting in", "did not stop in time"):
                assert marker not in text, f"{marker!r} in the tunnel log:\n{text[-3000:]}"


# --------------------------------------------------------------------------- backends


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
            # A restarted backend (same port) must not wait for TIME_WAIT to pass.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", port))
            self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

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


# --------------------------------------------------------------------------- BIO client


class BioClient:
    """A blocking TLS client over a raw socket and ``ssl.MemoryBIO``.

    The test sees and controls every byte on the wire: ``raw_send`` bypasses TLS,
    ``encrypt`` returns the records without sending them, ``close_notify`` half-closes.
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        address: tuple[str, int],
        timeout: float = 10.0,
        server_hostname: str | None = "localhost",
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.received_raw = bytearray()  # every byte read from the socket

    def flush(self) -> None:
        """Send what the TLS layer has written."""
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def fill(self) -> bool:
        """Read from the socket into the TLS layer; False on EOF."""
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.received_raw += data
        self.incoming.write(data)
        return True

    def client_hello(self) -> bytes:
        """Start the handshake and return the ClientHello bytes without sending them."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def handshake(self) -> None:
        """Complete the handshake."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        self.flush()

    def encrypt(self, data: bytes) -> bytes:
        """The TLS records carrying ``data``, not sent."""
        self.obj.write(data)
        return self.outgoing.read()

    def send(self, data: bytes) -> None:
        """Encrypt and send ``data``."""
        self.obj.write(data)
        self.flush()

    def recv(self, n: int = 65536) -> bytes:
        """Decrypted bytes; b"" on close_notify; SSLEOFError on a bare TCP close."""
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
            except ssl.SSLZeroReturnError:
                return b""

    def recv_all(self) -> bytes:
        """Everything until the server's close_notify."""
        parts = []
        while data := self.recv():
            parts.append(data)
        return b"".join(parts)

    def close_notify(self) -> None:
        """Send our close_notify (we may still read)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        self.flush()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def s_client_renegotiate(
    port: int, ca_file: Path, first_line: bytes, sent: Callable[[], object]
) -> str:
    """Drive ``openssl s_client -tls1_2``: send ``first_line``, wait for ``sent()`` to say
    the backend got it, then ask for a renegotiation ('R') and return s_client's output
    once it reports the outcome (whether s_client then exits by itself differs between
    OpenSSL versions, so its exit is not waited for)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"]
    command += ["-servername", "localhost", "-CAfile", str(ca_file)]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    chunks: list[bytes] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        out = proc.stdout
        reader = threading.Thread(target=lambda: chunks.extend(iter(out.readline, b"")))
        reader.start()
        proc.stdin.write(first_line)
        proc.stdin.flush()
        sent()
        proc.stdin.write(b"R\n")  # s_client's command letter: renegotiate
        proc.stdin.flush()
        wait_until(
            lambda: b"no renegotiation" in b"".join(chunks) or proc.poll() is not None,
            timeout=30,
            what="s_client's renegotiation outcome",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    return b"".join(chunks).decode(errors="replace")
