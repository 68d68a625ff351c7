"""Helpers of the adversarial suite, on top of the integration harness.

* :func:`dispatch_handler` is the one backend behind the shared tunnel. Every well-behaved
  client of this suite starts its plaintext with a tag line (``echo ...``, ``duplex ...``),
  so any backend connection whose first bytes are not a known tag is *stray*: plaintext
  that reached the backend from a connection that never legitimately got there.
* :class:`Guard` runs normal clients in a thread while an abusive case runs, then checks
  that they were all served correctly, that one more is served afterwards, and that the
  backend saw nothing but tagged connections.
* :func:`process_figures` and :func:`tcp_states` read /proc (through
  :mod:`harness.procfs`) for the tunnel's fds, sockets, RSS and CLOSE_WAIT sockets.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from harness import procfs
from harness.backends import Backend, ConnRecord
from harness.certs import Certs
from harness.net import MiB, recv_exactly
from harness.procfs import Figures
from harness.tunnel import TunnelProcess
from harness.waits import wait_until

TAG_MAX = 128
KNOWN_TAGS = ("echo", "duplex")

# One shared random block: payloads are windows of it (no per-connection generation cost,
# yet a lost, duplicated or reordered piece changes the checksum).
BLOCK_SIZE = 4 * MiB
_BLOCK = memoryview(random.Random(20240607).randbytes(BLOCK_SIZE + MiB))


def payload(size: int, seed: int, chunk: int = 256 << 10) -> list[memoryview]:
    """``size`` bytes as pieces of at most ``chunk`` bytes, determined by ``seed``."""
    pieces = []
    offset = (seed * 7_919_993) % BLOCK_SIZE
    left = size
    while left:
        n = min(chunk, left)
        pieces.append(_BLOCK[offset : offset + n])
        left -= n
        offset = (offset + 1_000_003) % BLOCK_SIZE
    return pieces


def payload_digest(size: int, seed: int) -> bytes:
    """SHA-256 of ``payload(size, seed)``."""
    digest = hashlib.sha256()
    for piece in payload(size, seed):
        digest.update(piece)
    return digest.digest()


# --------------------------------------------------------------------------- backend


def _read_tag(record: ConnRecord) -> tuple[str, bytes]:
    """The tag line and whatever followed it in the same reads."""
    data = bytearray()
    while b"\n" not in data and len(data) < TAG_MAX:
        part = record.sock.recv(TAG_MAX)
        if not part:
            break
        data += part
    line, _, rest = bytes(data).partition(b"\n")
    return line.decode("ascii", "replace"), rest


def dispatch_handler(record: ConnRecord) -> None:
    """Serve by tag: ``echo <name>`` echoes, ``duplex <up> <down> <seed>`` checks both
    ways; anything else is kept as stray plaintext."""
    tag, rest = _read_tag(record)
    record.tag = tag  # type: ignore[attr-defined]
    kind = tag.split(" ", 1)[0]
    if kind == "echo":
        record.bytes_received += len(rest)
        if rest:
            record.sock.sendall(rest)
        _echo(record)
    elif kind == "duplex":
        _duplex(record, tag, rest)
    else:
        record.received += tag.encode() + rest
        record.read_to_end()
        # A client may complete its handshake and send nothing: no plaintext, not stray.
        record.stray = bool(record.received)  # type: ignore[attr-defined]


def _echo(record: ConnRecord) -> None:
    try:
        while data := record.recv(MiB, keep=False):
            record.sock.sendall(data)
            record.bytes_sent += len(data)
        record.sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        record.error = exc
    finally:
        record.ended_at = time.monotonic()


def _duplex(record: ConnRecord, tag: str, rest: bytes) -> None:
    """Receive the upload while a thread sends the download; then send the upload's
    digest and require EOF (so extra bytes are caught too)."""
    _, up, down, seed = tag.split()
    up_size, down_size, seed_n = int(up), int(down), int(seed)
    sock = record.sock

    def send_download() -> None:
        for piece in payload(down_size, seed_n + 1):
            sock.sendall(piece)

    sender = threading.Thread(target=send_download, daemon=True)
    sender.start()
    digest = hashlib.sha256(rest)
    got = len(rest)
    buf = bytearray(MiB)
    view = memoryview(buf)
    while got < up_size:
        n = sock.recv_into(view, min(MiB, up_size - got))
        if not n:
            break
        digest.update(view[:n])
        got += n
    record.bytes_received = got
    sender.join()
    sock.sendall(digest.digest())
    extra = record.recv(MiB, keep=True)  # must be EOF
    record.duplex_ok = got == up_size and not extra  # type: ignore[attr-defined]
    sock.shutdown(socket.SHUT_WR)
    record.ended_at = time.monotonic()


def strays(backend: Backend) -> list[ConnRecord]:
    """Backend connections that did not start with a known tag (whose tag is read)."""
    return [r for r in backend.records if getattr(r, "stray", False)]


def tagged(backend: Backend, tag: str) -> ConnRecord:
    """The backend connection that announced ``tag`` (waits for it)."""
    return wait_until(
        lambda: next((r for r in backend.records if getattr(r, "tag", None) == tag), None),
        10,
        what=f"backend connection {tag!r}",
    )


# --------------------------------------------------------------------------- normal clients


def normal_exchange(
    tunnel: TunnelProcess, ctx: ssl.SSLContext, name: str, size: int = 2000
) -> float:
    """One well-behaved client: handshake, echo ``size`` bytes, close; its latency."""
    start = time.monotonic()
    data = bytes(payload(size, hash(name) & 0xFFFF)[0])
    with tunnel.connect(ctx) as sock:
        sock.sendall(f"echo {name}\n".encode() + data)
        assert recv_exactly(sock.recv, size) == data, f"{name}: echo corrupted"
    return time.monotonic() - start


@dataclass
class Guard:
    """Normal clients served in a thread while a case runs; see :meth:`check`."""

    tunnel: TunnelProcess
    backend: Backend
    certs: Certs
    served: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _records_before: int = 0

    def start(self) -> Guard:
        self._records_before = len(self.backend.records)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        contexts = [self.certs.client_context("1.2"), self.certs.client_context("1.3")]
        n = 0
        while not self._stop.is_set():
            try:
                self.latencies.append(
                    normal_exchange(self.tunnel, contexts[n % 2], f"normal-{os.getpid()}-{n}")
                )
                self.served += 1
            except (OSError, AssertionError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            n += 1
            self._stop.wait(0.05)  # pacing, not synchronisation

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check(self, extra_backend_conns: int = 0, max_latency: float = 10.0) -> None:
        """Normal clients were served meanwhile and one is served now; the backend got
        no stray plaintext and no connection beyond the normal ones (+ ``extra``)."""
        wait_until(lambda: self.served >= 1 or self.errors, 30, what="a normal client served")
        self.stop()
        assert not self.errors, self.errors[:5]
        normal_exchange(self.tunnel, self.certs.client_context(), "normal-after")
        expected = self._records_before + self.served + 1 + extra_backend_conns
        wait_until(lambda: len(self.backend.records) >= expected, 10, what="backend records")
        assert not strays(self.backend), [bytes(r.received[:64]) for r in strays(self.backend)]
        assert len(self.backend.records) == expected, "unexpected backend connections"
        worst = max(self.latencies)
        print(f"  normal clients: {self.served} served, worst latency {worst * 1000:.0f} ms")
        assert worst < max_latency


# --------------------------------------------------------------------------- /proc figures


def tunnel_pids(tunnel: TunnelProcess) -> list[int]:
    """The supervisor and its workers."""
    return [tunnel.pid, *tunnel.worker_pids()]


def process_figures(tunnel: TunnelProcess) -> Figures:
    """Measure the tunnel's processes now."""
    return procfs.figures(tunnel_pids(tunnel))


def fd_kinds(tunnel: TunnelProcess) -> dict[int, dict[str, int]]:
    """What the tunnel's processes hold, per pid (the supervisor first)."""
    return procfs.fd_kinds(tunnel_pids(tunnel))


def connections_held(tunnel: TunnelProcess) -> int:
    """Sockets of the tunnel's processes that belong to a connection, open or closing."""
    return procfs.connections_held(tunnel_pids(tunnel))


def tcp_states(tunnel: TunnelProcess) -> dict[str, int]:
    """TCP states of the tunnel's sockets (from /proc/net/tcp{,6})."""
    return procfs.tcp_states(tunnel_pids(tunnel))


def close_reason(tunnel: TunnelProcess, sock: socket.socket, since: int) -> str:
    """The ``reason`` the tunnel logged for the connection of client socket ``sock``;
    ``since`` is the number of connection lines logged before it connected (client ports
    are reused, so older lines may name the same port)."""
    port = sock.getsockname()[1]
    marker = f" peer=127.0.0.1:{port} "
    line = wait_until(
        lambda: next((ln for ln in tunnel.conn_lines()[since:] if marker in ln), None),
        10,
        what=f"the log line of client port {port}",
    )
    return str(line.rsplit('reason="', 1)[1].rstrip('"'))
