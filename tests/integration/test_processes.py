"""Worker-level behaviour: max_connections backlog, session resumption across workers."""

from __future__ import annotations

import re
import select
from collections import Counter

import pytest

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    TunnelFactory,
    echo_handler,
    recv_exactly,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


def test_max_connections_leaves_the_third_in_the_backlog(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """With max_connections = 2, a third client's handshake waits (in the backlog) until
    one of the first two closes; then it is served."""
    tunnel = start_tunnel(
        start_backend(echo_handler).address, tunnel={"max_connections": 2}, handshake_timeout="5s"
    )
    ctx = certs.client_context()
    first = tunnel.connect(ctx)
    second = tunnel.connect(ctx)
    for sock in (first, second):
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"
    wait_until(lambda: "max_connections (2) reached" in tunnel.log(), what="pause log line")

    third = BioClient(ctx, tunnel.address)  # the TCP connect completes: kernel backlog
    third.sock.sendall(third.client_hello())
    readable, _, _ = select.select([third.sock], [], [], 1.0)
    assert not readable, "the third connection was accepted and answered"

    first.unwrap()
    first.close()
    third.handshake()  # now accepted: the handshake completes
    third.send(b"third")
    assert recv_exactly(third.recv, 5) == b"third"
    third.close_notify()
    assert third.recv() == b""
    third.close()
    second.close()


def test_tls13_sessions_resume_on_every_worker(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """With two workers, a TLS 1.3 session resumes whichever worker accepts the
    connection: every reconnection resumes, and resumed ones land on both workers."""
    tunnel = start_tunnel(start_backend(echo_handler).address, workers=2)
    workers = set(tunnel.worker_pids())
    ctx = certs.client_context("1.3")

    with tunnel.connect(ctx) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock.recv, 4) == b"ping"  # the tickets arrive with the reply
        session = sock.session
        assert not sock.session_reused
        sock.unwrap()
    assert session is not None
    ports = []
    for _ in range(20):
        raw = tunnel.raw()
        sock = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        with sock:
            sock.sendall(b"again")
            assert recv_exactly(sock.recv, 5) == b"again"
            assert sock.session_reused, "a reconnection did not resume"
            ports.append(sock.getsockname()[1])
            session = sock.session
            sock.unwrap()

    def resumed_pids() -> Counter[int] | None:
        pids = {}
        for line in tunnel.conn_lines():
            match = re.search(r"tunnel\[(\d+)\].* peer=127\.0\.0\.1:(\d+) .*resumed=yes", line)
            if match:
                pids[int(match.group(2))] = int(match.group(1))
        if set(ports) <= set(pids):
            return Counter(pids[port] for port in ports)
        return None

    per_worker = wait_until(resumed_pids, what="a resumed=yes summary line per reconnection")
    print(f"resumed connections per worker pid: {dict(per_worker)}")
    pids = set(per_worker)
    assert pids <= workers
    assert len(pids) >= 2, f"all 20 resumed connections on one worker: {pids}"
