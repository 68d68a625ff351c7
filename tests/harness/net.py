"""Loopback helpers: reserved ports, addresses that refuse, raw-socket reads, TLS records."""

from __future__ import annotations

import atexit
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

MiB = 1 << 20

# TLS record content types.
ALERT = 0x15
HANDSHAKE = 0x16
APPLICATION_DATA = 0x17

_reserved: list[socket.socket] = []


@atexit.register
def _release_reserved() -> None:
    for sock in _reserved:
        sock.close()


def reserve_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that stays bound by this process until the session ends.

    The socket is bound (``SO_REUSEADDR`` + ``SO_REUSEPORT``) but never listens: the kernel
    hands the port to no other ``bind(port 0)``, a connect to it is refused, and a process
    of this user that binds it with the same options (Tunnel, nginx, HAProxy, a restarted
    backend) may still listen there. Unlike bind-then-release, nobody can take the port
    between the moment it is chosen and the moment the test uses it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    _reserved.append(sock)
    return int(sock.getsockname()[1])


def refusing_address(host: str = "127.0.0.1") -> str:
    """``host:port`` where connects are refused (a reserved port that nobody listens on)."""
    return f"{host}:{reserve_port(host)}"


def has_ipv6_loopback() -> bool:
    """True when this machine can bind ``::1``."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def parse_host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:443`` or ``[::1]:443`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


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
