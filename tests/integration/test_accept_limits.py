"""Accepting pauses, never drops: at a listener's max_connections (others keep
accepting), and at the cap the open-files limit puts on the worker's max_connections."""

from __future__ import annotations

import select

import pytest

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    TunnelFactory,
    echo_handler,
    recv_exactly,
    reserve_port,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def _served(client: BioClient, payload: bytes) -> None:
    client.handshake()
    client.send(payload)
    assert recv_exactly(client.recv, len(payload)) == payload


def _waits_in_backlog(client: BioClient) -> None:
    client.sock.sendall(client.client_hello())
    readable, _, _ = select.select([client.sock], [], [], 1.0)
    assert not readable, "the connection was accepted and answered"


def test_listener_limit_pauses_only_that_listener(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler).address
    other_port = reserve_port()  # [test] already says 127.0.0.1:0
    other = {
        "accept": f"127.0.0.1:{other_port}",
        "cert": str(certs.cert_path),
        "key": str(certs.key_path),
        "connect": backend,
    }
    tunnel = start_tunnel(
        backend, max_connections=1, handshake_timeout="5s", extra={"other": other}
    )
    ctx = certs.client_context()
    first = BioClient(ctx, tunnel.address)
    _served(first, b"first")
    wait_until(
        lambda: "listener test: max_connections (1) reached" in tunnel.log(), what="pause line"
    )
    second = BioClient(ctx, tunnel.address)
    _waits_in_backlog(second)
    elsewhere = BioClient(ctx, ("127.0.0.1", other_port))
    _served(elsewhere, b"other listener")  # the other listener still accepts
    elsewhere.close()

    first.close_notify()
    first.close()
    second.handshake()  # accepted once the first is gone
    second.send(b"second")
    assert recv_exactly(second.recv, 6) == b"second"
    second.close()


def test_open_files_limit_caps_max_connections(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """With 100 open files, a worker takes at most (100 - 64) / 2 = 18 connections and
    leaves the next in the backlog, instead of running into EMFILE and dropping it."""
    tunnel = start_tunnel(start_backend(echo_handler).address, nofile=100, handshake_timeout="5s")
    wait_until(lambda: "using 18 per worker" in tunnel.log(), what="the open-files warning")
    assert "max_connections 10000 needs more open files" in tunnel.log()
    ctx = certs.client_context()
    clients = [BioClient(ctx, tunnel.address) for _ in range(18)]
    for index, client in enumerate(clients):
        _served(client, f"client {index}".encode())
    extra = BioClient(ctx, tunnel.address)
    _waits_in_backlog(extra)
    for client in clients[:3]:  # accepting resumes at 90% of the limit: 16 of 18
        client.close_notify()
        client.close()
    extra.handshake()
    extra.send(b"late")
    assert recv_exactly(extra.recv, 4) == b"late"
    for client in [*clients[3:], extra]:
        client.close()
    assert "Too many open files" not in tunnel.log()
