"""log_target = syslog delivered to real receivers: a UDP socket and a Unix datagram socket.

The test owns the receiving socket, points ``log_syslog_address`` at it and checks what
arrives: the PRI (facility * 8 + severity), the ``tunnel[pid]:`` tag and the connection
summary (text, or the JSON object after the tag).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Backend,
    Certs,
    Launcher,
    Proc,
    port_accepts,
    reserve_port,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

LOCAL3 = 19
INFO = 6
MESSAGE = re.compile(rb"<(\d+)>tunnel\[(\d+)\]: (.*?)\x00?", re.DOTALL)


class Receiver:
    """A datagram socket the test reads syslog messages from."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.address = address
        self.messages: list[tuple[int, int, str]] = []  # (PRI, pid, text)

    def drain(self) -> None:
        """Take every datagram that has arrived."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            match = MESSAGE.fullmatch(data)
            assert match, f"not a syslog message with the tunnel tag: {data!r}"
            pri, pid, text = match.groups()
            self.messages.append((int(pri), int(pid), text.decode()))

    def wait(self, needle: str) -> tuple[int, int, str]:
        """The first message containing ``needle`` (polled with a deadline)."""
        found: list[tuple[int, int, str]] = []

        def check() -> bool:
            self.drain()
            found.extend(m for m in self.messages if needle in m[2])
            return bool(found)

        wait_for(f"a syslog message with {needle!r}", check)
        return found[0]


@contextlib.contextmanager
def receiver(kind: str, tmp_path: Path) -> Iterator[Receiver]:
    if kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        address = f"udp:127.0.0.1:{sock.getsockname()[1]}"
    else:
        path = tmp_path / "syslog.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        address = f"unix:{path}"
    with sock:
        yield Receiver(sock, address)


def fetch(port: int, certs: Certs) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        local_port = sock.getsockname()[1]
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return local_port, data


def start(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    port: int,
    backend: Backend,
    sink: Receiver,
    log_format: str,
) -> Proc:
    config = write_config(
        tmp_path / "tunnel.ini",
        certs,
        port,
        backend.port,
        log_target="syslog",
        log_facility="local3",
        log_syslog_address=sink.address,
        log_format=log_format,
    )
    return tunnel.start("run", "-c", str(config))


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("kind", ["udp", "unix"])
def test_syslog_delivery(
    kind: str,
    log_format: str,
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    hello_backend: Backend,
) -> None:
    port = reserve_port()
    with receiver(kind, tmp_path) as sink:
        proc = start(tunnel, tmp_path, certs, port, hello_backend, sink, log_format)
        pri, pid, _ = sink.wait("tunnel started")
        assert (pri, pid) == (LOCAL3 * 8 + INFO, proc.pid)
        wait_for(f"port {port}", lambda: port_accepts(port))
        local_port, reply = fetch(port, certs)
        assert b"hello from the backend" in reply
        peer = f"127.0.0.1:{local_port}"
        pri, pid, text = sink.wait(peer)
        assert pri == LOCAL3 * 8 + INFO
        assert pid in proc.worker_pids()  # a worker logs the connection's summary
        if log_format == "json":
            entry = json.loads(text)
            assert entry["event"] == "conn" and entry["peer"] == peer
            assert entry["listener"] == "web" and entry["reason"] == "done"
            assert entry["in"] == 18 and entry["out"] == len(reply)
            assert entry["pid"] == pid and entry["level"] == "info"
        else:
            assert text.startswith(f"INFO tunnel.conn: conn peer={peer} ")
            assert " listener=web " in text and " in=18 " in text
            assert f" out={len(reply)} " in text
        assert proc.stderr() == ""  # everything went to syslog
        proc.stop()  # waits for the exit
        pri, pid, _ = sink.wait("stopped")
        assert (pri, pid) == (LOCAL3 * 8 + INFO, proc.pid)


def test_syslog_socket_missing_is_a_config_error(
    tunnel: Launcher, tmp_path: Path, certs: Certs
) -> None:
    missing = tmp_path / "nobody.sock"
    config = write_config(
        tmp_path / "tunnel.ini",
        certs,
        reserve_port(),
        9,
        log_target="syslog",
        log_syslog_address=f"unix:{missing}",
    )
    result = tunnel.run("run", "-c", str(config))
    assert result.returncode == 2
    assert f"[tunnel] log_syslog_address: cannot send to the syslog socket {missing}" in (
        result.stderr
    )
    assert "is the syslog daemon running" in result.stderr
