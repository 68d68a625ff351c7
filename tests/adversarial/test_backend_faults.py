"""Backend faults: the client always gets a clean TLS ending (close_notify, then FIN, never
an RST) and nothing is lost that the backend was willing to take.

Each case runs its own one-worker tunnel with two listeners: ``test`` in front of the
faulty backend, and ``ok`` in front of a healthy dispatching backend, where a
:class:`~.support.Guard` serves normal clients meanwhile and afterwards (same worker, same
event loop) and checks that backend for stray plaintext.
"""

from __future__ import annotations

import copy
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from harness.backends import BackendFactory, ConnRecord, reset_handler
from harness.certs import Certs
from harness.clients import BioClient
from harness.net import MiB, read_until_closed, recv_exactly, refusing_address, reserve_port
from harness.tunnel import TunnelFactory, TunnelProcess
from harness.waits import wait_until

from .support import Guard, dispatch_handler, payload, payload_digest, tagged

pytestmark = pytest.mark.timeout(90)

VERSIONS = ["1.2", "1.3"]
Start = Callable[..., TunnelProcess]


@pytest.fixture
def faulty(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> Iterator[tuple[Start, list[Guard]]]:
    """``start(connect, **listener)``: a tunnel whose ``test`` listener relays to
    ``connect``; its ``ok`` listener is guarded (``guards[-1]``)."""
    guards: list[Guard] = []

    def start(connect: str | list[str], **listener: object) -> TunnelProcess:
        healthy = start_backend(dispatch_handler)
        ok_port = reserve_port()
        ok_section = {
            "accept": f"127.0.0.1:{ok_port}",
            "cert": str(certs.cert_path),
            "key": str(certs.key_path),
            "connect": healthy.address,
        }
        tunnel = start_tunnel(connect, extra={"ok": ok_section}, **listener)
        ok_view = copy.copy(tunnel)
        ok_view.port = ok_port
        guards.append(Guard(ok_view, healthy, certs).start())
        return tunnel

    try:
        yield start, guards
    finally:
        for guard in guards:
            guard.stop()
        start_tunnel.check_logs()


def assert_close_notify_then_fin(client: BioClient) -> bytes:
    """Read until the tunnel closes: the plaintext before its close_notify; the TCP
    connection must end with a FIN (an RST would mean unread data was thrown away)."""
    raw, how = read_until_closed(client.sock, timeout=15)
    assert how == "eof", f"connection ended by {how}, not a clean close"
    client.incoming.write(raw)
    plain = bytearray()
    while True:
        try:
            data = client.obj.read(65536)
        except ssl.SSLZeroReturnError:
            data = b""
        except ssl.SSLWantReadError:
            raise AssertionError(f"FIN without close_notify after {bytes(plain)[:64]!r}") from None
        if not data:  # b"" (or SSLZeroReturnError): close_notify
            return bytes(plain)
        plain += data


def connect_and_send(tunnel: TunnelProcess, certs: Certs, version: str, data: bytes) -> BioClient:
    client = BioClient(certs.client_context(version), tunnel.address)
    client.handshake()
    client.send(data)
    return client


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_refused(version: str, certs: Certs, faulty: tuple[Start, list[Guard]]) -> None:
    start, guards = faulty
    tunnel = start(refusing_address())
    client = connect_and_send(tunnel, certs, version, b"GET / HTTP/1.1\r\n\r\n")
    assert assert_close_notify_then_fin(client) == b""
    client.close()
    wait_until(lambda: "backend unreachable" in tunnel.log(), 10, what="summary line")
    guards[-1].check()


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_accepts_then_resets(
    version: str, certs: Certs, faulty: tuple[Start, list[Guard]], start_backend: BackendFactory
) -> None:
    start, guards = faulty
    backend = start_backend(reset_handler)
    tunnel = start(backend.address)
    client = connect_and_send(tunnel, certs, version, b"hello")
    assert assert_close_notify_then_fin(client) == b""
    client.close()
    backend.wait_connections(1)
    guards[-1].check()


def test_backend_slow_to_accept_times_out_cleanly(
    certs: Certs, faulty: tuple[Start, list[Guard]], unreachable: str
) -> None:
    start, guards = faulty
    tunnel = start(unreachable, connect_timeout="1s")
    client = connect_and_send(tunnel, certs, "1.3", b"hello")
    started = time.monotonic()
    assert assert_close_notify_then_fin(client) == b""
    waited = time.monotonic() - started
    print(f"  slow backend: close_notify after {waited:.1f} s (connect_timeout 1 s)")
    client.close()
    wait_until(lambda: "connect timed out" in tunnel.log(), 10, what="summary line")
    guards[-1].check()


def test_backend_slow_to_accept_fails_over(
    certs: Certs,
    faulty: tuple[Start, list[Guard]],
    start_backend: BackendFactory,
    unreachable: str,
) -> None:
    start, guards = faulty
    second = start_backend(dispatch_handler)
    tunnel = start([unreachable, second.address], connect_timeout="1s")
    for version in VERSIONS:
        with tunnel.connect(certs.client_context(version)) as sock:
            sock.sendall(f"echo failover-{version}\n".encode() + b"ping")
            assert recv_exactly(sock.recv, 4) == b"ping"
        tagged(second, f"echo failover-{version}")
    guards[-1].check()


UPLOAD_AFTER_FIN = 8 * MiB


def half_closing_handler(record: ConnRecord) -> None:
    """Read the first line, answer, shut down writing (FIN), then keep reading to EOF:
    the SHA-256 and size of what came after the FIN are kept on the record."""
    line = b""
    while not line.endswith(b"\n"):
        part = record.recv(1, keep=False)
        if not part:
            return
        line += part
    record.sock.sendall(b"bye\n")
    record.sock.shutdown(socket.SHUT_WR)
    digest = hashlib.sha256()
    size = 0
    while data := record.recv(MiB, keep=False):
        digest.update(data)
        size += len(data)
    record.after_fin = (size, digest.digest())  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_half_closes_rest_still_delivered(
    version: str, certs: Certs, faulty: tuple[Start, list[Guard]], start_backend: BackendFactory
) -> None:
    """The backend answers and half-closes; the client gets the answer and close_notify,
    then still uploads 8 MiB, all of which reaches the backend (checked by SHA-256)."""
    start, guards = faulty
    backend = start_backend(half_closing_handler)
    tunnel = start(backend.address)
    client = connect_and_send(tunnel, certs, version, b"hello\n")
    assert client.recv_all() == b"bye\n"  # then close_notify: the backend's FIN
    for piece in payload(UPLOAD_AFTER_FIN, 11):
        client.send(bytes(piece))
    client.close_notify()
    (record,) = backend.wait_connections(1)
    wait_until(record.done.is_set, 30, what="backend read to EOF")
    assert record.after_fin == (UPLOAD_AFTER_FIN, payload_digest(UPLOAD_AFTER_FIN, 11))  # type: ignore[attr-defined]
    _, how = read_until_closed(client.sock, timeout=10)
    assert how == "eof", how
    client.close()
    guards[-1].check()


RESTART_CONNECTIONS = 20


def test_backend_restarts_with_connections_open(
    certs: Certs, faulty: tuple[Start, list[Guard]], start_backend: BackendFactory
) -> None:
    """20 open connections when the backend goes away: every client gets close_notify
    within seconds; once the backend is back on its port, new clients are served at once."""
    start, guards = faulty
    first = start_backend(dispatch_handler)
    port = int(first.address.rsplit(":", 1)[1])
    tunnel = start(first.address)
    clients = []
    for i in range(RESTART_CONNECTIONS):
        version = VERSIONS[i % 2]
        client = connect_and_send(tunnel, certs, version, f"echo open-{i}\n".encode() + b"hi")
        assert recv_exactly(client.recv, 2) == b"hi"
        clients.append(client)
    first.close()  # every backend connection shut down, the listener gone
    stopped = time.monotonic()
    ended: list[float] = []
    lock = threading.Lock()

    def wait_end(client: BioClient) -> None:
        assert_close_notify_then_fin_after_notify(client)
        with lock:
            ended.append(time.monotonic() - stopped)

    threads = [threading.Thread(target=wait_end, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(ended) == RESTART_CONNECTIONS, f"only {len(ended)} connections ended cleanly"
    print(f"  backend restart: {len(ended)} clients got close_notify within {max(ended):.2f} s")
    assert max(ended) < 10
    second = start_backend(dispatch_handler, port=port)
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"echo after-restart\nping")
        assert recv_exactly(sock.recv, 4) == b"ping"
    tagged(second, "echo after-restart")
    for client in clients:
        client.close()
    guards[-1].check()


def assert_close_notify_then_fin_after_notify(client: BioClient) -> None:
    """The tunnel sends close_notify (the backend's FIN); we answer with ours and the
    connection then ends with a FIN."""
    while True:
        try:
            if client.recv() == b"":
                break
        except ssl.SSLZeroReturnError:
            break
    client.close_notify()
    _, how = read_until_closed(client.sock, timeout=10)
    assert how == "eof", how
