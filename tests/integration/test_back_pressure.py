"""Back-pressure: a peer that never reads blocks the sender; the worker's memory stays flat."""

from __future__ import annotations

import pytest

from .harness import (
    BackendFactory,
    Certs,
    ConnRecord,
    MiB,
    TunnelFactory,
    echo_handler,
    pattern,
    recv_exactly,
    rss_kib,
    sender_handler,
    sink_handler,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

OFFERED = 256 * MiB  # what the sender tries to push
MAX_THROUGH = 64 * MiB  # what socket buffers on the way may absorb, generously
MAX_GROWTH_KIB = 20 * 1024  # worker RSS growth allowed


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_upload_to_backend_that_never_reads(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The client offers 256 MiB to a sink: it blocks after a few MiB, RSS grows < 20 MiB."""
    backend = start_backend(sink_handler)
    tunnel = start_tunnel(backend.address)
    (worker,) = tunnel.worker_pids()
    sock = tunnel.connect(certs.client_context(version))
    backend.wait_connections(1)
    before = rss_kib(worker)
    sock.settimeout(2.0)  # no progress for 2 s counts as blocked
    chunk = pattern(MiB, 11)
    sent = 0
    with pytest.raises(TimeoutError):
        while sent < OFFERED:
            sock.sendall(chunk)
            sent += len(chunk)
    growth = rss_kib(worker) - before
    print(f"upload blocked after {sent / MiB:.0f} MiB; worker RSS grew {growth} KiB")
    assert sent < MAX_THROUGH
    assert growth < MAX_GROWTH_KIB
    sock.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_download_to_client_that_never_reads(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The backend offers data without end to a client that never reads: the backend
    blocks after a few MiB and the worker's RSS grows < 20 MiB."""
    backend = start_backend(sender_handler)
    tunnel = start_tunnel(backend.address)
    (worker,) = tunnel.worker_pids()
    before = rss_kib(worker)
    sock = tunnel.connect(certs.client_context(version))
    (record,) = backend.wait_connections(1)
    wait_until(lambda: record.blocked.is_set() or record.ended_at, timeout=30, what="sender stop")
    assert record.blocked.is_set(), f"the backend sent {record.bytes_sent} bytes unblocked"
    growth = rss_kib(worker) - before
    print(f"download blocked after {record.bytes_sent / MiB:.0f} MiB; RSS grew {growth} KiB")
    assert record.bytes_sent < MAX_THROUGH
    assert growth < MAX_GROWTH_KIB
    sock.close()


def test_blocked_connection_does_not_stall_others(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """While one connection of a worker is blocked by back-pressure, the same worker
    serves another connection."""

    def first_sinks_then_echo(record: ConnRecord) -> None:
        if record is backend.records[0]:
            sink_handler(record)
        else:
            echo_handler(record)

    backend = start_backend(first_sinks_then_echo)
    tunnel = start_tunnel(backend.address)
    blocked = tunnel.connect(certs.client_context())
    backend.wait_connections(1)
    blocked.settimeout(2.0)
    chunk = b"x" * MiB
    with pytest.raises(TimeoutError):
        for _ in range(OFFERED // MiB):
            blocked.sendall(chunk)
    with tunnel.connect(certs.client_context(), timeout=5) as other:
        other.sendall(b"ping")
        assert recv_exactly(other.recv, 4) == b"ping"
    blocked.close()
