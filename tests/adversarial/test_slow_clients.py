"""Silent and slow clients are closed by the handshake timeout; others keep being served."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time

import pytest
from harness.certs import Certs
from harness.clients import BioClient
from harness.net import read_until_closed
from harness.tunnel import TunnelProcess

from .conftest import HANDSHAKE_TIMEOUT
from .support import Guard, close_reason

pytestmark = pytest.mark.timeout(90)

CROWD = 300
DRIBBLE_EVERY = 1.0  # seconds between two bytes of one slowloris connection


def test_silent_client(shared: TunnelProcess, guard: Guard) -> None:
    since = len(shared.conn_lines())
    with shared.raw() as sock:
        _, how = read_until_closed(sock, timeout=HANDSHAKE_TIMEOUT + 10)
        assert how in ("eof", "reset"), how
        assert close_reason(shared, sock, since) == "handshake timeout"
    guard.check()


def test_half_client_hello_then_silence(certs: Certs, shared: TunnelProcess, guard: Guard) -> None:
    since = len(shared.conn_lines())
    client = BioClient(certs.client_context(), shared.address)
    hello = client.client_hello()
    client.sock.sendall(hello[: len(hello) // 2])
    _, how = read_until_closed(client.sock, timeout=HANDSHAKE_TIMEOUT + 10)
    assert how in ("eof", "reset"), how
    assert close_reason(shared, client.sock, since) == "handshake timeout"
    client.close()
    guard.check()


def test_slowloris_crowd(certs: Certs, shared: TunnelProcess, guard: Guard) -> None:
    """300 connections each send one byte of a ClientHello per second: every one is
    closed by the handshake timeout, while normal clients keep being served."""
    hello = BioClient(certs.client_context(), shared.address).client_hello()
    sel = selectors.DefaultSelector()
    socks = [shared.raw() for _ in range(CROWD)]
    sent = dict.fromkeys(socks, 0)
    closed_after: list[float] = []
    start = time.monotonic()
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    try:
        next_dribble = start
        deadline = start + HANDSHAKE_TIMEOUT + 20  # bounded in time whatever happens
        while sent and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_dribble:
                for sock in list(sent):
                    with contextlib.suppress(OSError):
                        sock.send(hello[sent[sock] : sent[sock] + 1])
                        sent[sock] += 1
                next_dribble = now + DRIBBLE_EVERY
            for key, _ in sel.select(timeout=max(0.0, next_dribble - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    del sent[sock]
                    closed_after.append(time.monotonic() - start)
        assert not sent, f"{len(sent)} slowloris connections still open"
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    print(
        f"  slowloris: {CROWD} connections closed after {min(closed_after):.1f}"
        f"..{max(closed_after):.1f} s"
    )
    assert min(closed_after) >= HANDSHAKE_TIMEOUT * 0.9
    guard.check()
