"""Greedy clients are held by back-pressure; aborted clients release everything."""

from __future__ import annotations

import socket

import pytest
from harness.backends import Backend
from harness.certs import Certs
from harness.clients import BioClient
from harness.net import MiB, abort, recv_exactly
from harness.procfs import rss_kib
from harness.tunnel import TunnelProcess
from harness.waits import wait_until

from .support import Guard, payload, tagged, tcp_states

pytestmark = pytest.mark.timeout(90)

OFFERED = 128 * MiB
MAX_THROUGH = 64 * MiB  # 8 loopback socket buffers on the way (autotuned up to MiBs)
MAX_RSS_GROWTH_KIB = 30 * 1024


@pytest.mark.memory_bound
@pytest.mark.usefixtures("rss_bound")  # the package's RSS bound goes with this test's
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_upload_without_reading_replies(
    version: str, certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    """The client pushes 128 MiB to an echo and never reads: it is blocked after a few
    MiB, worker RSS stays bounded, and the backend connection goes when the client does."""
    before = sum(rss_kib(pid) for pid in shared.worker_pids())
    tag = f"echo greedy-{version}"
    sock = shared.connect(certs.client_context(version))
    sock.sendall(f"{tag}\n".encode())
    sock.settimeout(3.0)  # no progress for 3 s counts as blocked
    sent = 0
    with pytest.raises(TimeoutError):
        for piece in payload(OFFERED, 3, chunk=MiB):
            sock.sendall(piece)
            sent += len(piece)
    growth = sum(rss_kib(pid) for pid in shared.worker_pids()) - before
    print(f"  greedy {version}: blocked after {sent / MiB:.0f} MiB, RSS +{growth} KiB")
    assert sent < MAX_THROUGH
    assert growth < MAX_RSS_GROWTH_KIB
    record = tagged(backend, tag)
    abort(sock)
    wait_until(record.done.is_set, 10, what="backend connection released")
    guard.check(extra_backend_conns=1)


def test_many_aborts_mid_handshake_and_mid_transfer(
    certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    """50 RSTs during the handshake and 50 during a transfer, at once: every backend
    connection is released and no tunnel socket is left in CLOSE_WAIT."""
    n = 50
    half = []
    for _ in range(n):
        client = BioClient(certs.client_context(), shared.address)
        hello = client.client_hello()
        client.sock.sendall(hello[: len(hello) // 2])
        half.append(client)
    busy = []
    for i in range(n):
        client = BioClient(certs.client_context("1.2" if i % 2 else "1.3"), shared.address)
        client.handshake()
        client.send(f"echo abort-{i}\n".encode() + b"x" * 1000)
        assert recv_exactly(client.recv, 1000) == b"x" * 1000
        client.send(bytes(payload(256 << 10, i)[0]))  # in flight when the RST comes
        busy.append(client)
    for client in half + busy:
        abort(client.sock)
    records = [tagged(backend, f"echo abort-{i}") for i in range(n)]
    wait_until(lambda: all(r.done.is_set() for r in records), 15, what="backends released")
    wait_until(lambda: not tcp_states(shared).get("CLOSE_WAIT"), 15, what="no CLOSE_WAIT")
    print(f"  after {2 * n} aborts: tunnel TCP states {tcp_states(shared)}")
    guard.check(extra_backend_conns=n)


def test_fin_mid_transfer_is_not_close_wait(
    certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    """A client that closes (FIN, no close_notify) mid-transfer leaves no CLOSE_WAIT."""
    client = BioClient(certs.client_context(), shared.address)
    client.handshake()
    client.send(b"echo fin-mid\n" + b"y" * 100)
    assert recv_exactly(client.recv, 100) == b"y" * 100
    client.sock.shutdown(socket.SHUT_WR)
    record = tagged(backend, "echo fin-mid")
    wait_until(record.done.is_set, 10, what="backend connection ended")
    client.close()
    wait_until(lambda: not tcp_states(shared).get("CLOSE_WAIT"), 15, what="no CLOSE_WAIT")
    guard.check(extra_backend_conns=1)
