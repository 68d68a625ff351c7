"""TLS 1.3 tickets ride on the first reply; a client gone at once gets no backend.

F1: on TLS 1.3, Tunnel sends its NewSessionTickets in front of the first bytes it sends the
client (the backend's first reply), not right after the handshake: 2 (OpenSSL's default
num_tickets) after a full handshake, exactly 1 after a resumption (also with a
``ticket_key_file``, where a resumption used to get none). A connection that never gets a
reply gets no ticket. TLS 1.2 is unchanged: its ticket is part of the handshake.

F2: a client whose bare TCP FIN (or reset) is there when its Finished is, having sent no
application data, gets no backend connection; its log line says reason "client closed"
(for a reset, "client error").
Data before the FIN, or a close_notify (TLS half-close), still get a backend and the EOF.

The client is :class:`BioClient` (memory BIOs over a raw socket), so the test sees every
byte: tickets are counted by the client context's ``_msg_callback`` (NewSessionTicket is
handshake message type 4); "nothing arrived yet" is a zero-timeout poll of the raw socket
after a point the tunnel must have passed (the backend accepted, or got the request).
TCP_CORK makes a flight, its data and the FIN leave in one segment; a reset (which drops
corked data) is made to wait with the Finished by stopping the worker meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    Backend,
    BackendFactory,
    BioClient,
    Certs,
    ConnRecord,
    Handler,
    TunnelFactory,
    TunnelProcess,
    abort,
    expect_plane,
    read_until_closed,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

VERSIONS = ["1.2", "1.3"]
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
HANDSHAKE_RECORD = 22  # content type of the msg_callback's handshake messages
NEW_SESSION_TICKET = 4  # handshake message type


class TicketCounter:
    """A client context's ``_msg_callback``: counts the NewSessionTickets it reads."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.count = 0
        ctx._msg_callback = self  # type: ignore[attr-defined]  # private, stable in 3.11

    def __call__(
        self, conn: Any, direction: str, version: Any, ctype: Any, mtype: Any, _: Any
    ) -> None:
        if direction == "read" and ctype == HANDSHAKE_RECORD and mtype == NEW_SESSION_TICKET:
            self.count += 1


class GatedBackend:
    """A handler that reads the request, answers once per :meth:`speak`, reads to EOF."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)

    def speak(self) -> None:
        """Let one connection send its reply."""
        self.gate.release()

    def __call__(self, record: ConnRecord) -> None:
        with record.sock:
            while len(record.received) < len(REQUEST):
                if not record.recv():
                    return
            if self.gate.acquire(timeout=30):
                record.sock.sendall(REPLY)
                record.read_to_end()


def reply_after_eof(record: ConnRecord) -> None:
    """Read until EOF, then send the reply and close."""
    with record.sock:
        record.read_to_end()
        if record.error is None:
            record.sock.sendall(REPLY)


def nothing_arrived(client: BioClient) -> bool:
    """Whether no byte is waiting on the client's socket (a zero-timeout poll)."""
    return not select.select([client.sock], [], [], 0)[0]


def read_reply(client: BioClient) -> bytes:
    """Read the backend's reply (as many bytes as REPLY has)."""
    reply = b""
    while len(reply) < len(REPLY) and (data := client.recv()):
        reply += data
    return reply


def new_record(backend: Backend, before: int) -> ConnRecord:
    """The backend's connection after the first ``before`` (waiting for it)."""
    return backend.wait_connections(before + 1, timeout=10)[before]


def gated_exchange(
    tunnel: TunnelProcess,
    backend: Backend,
    gate: GatedBackend,
    ctx: ssl.SSLContext,
    counter: TicketCounter,
    session: ssl.SSLSession | None = None,
) -> tuple[ssl.SSLObject, int]:
    """Handshake (resuming ``session``), check that no byte reaches the client before the
    backend answers, then request/reply. Returns the connection and how many tickets
    arrived by the time the reply did."""
    before = len(backend.records)
    counter.count = 0
    client = BioClient(ctx, tunnel.address)
    if session is not None:
        client.obj.session = session
    client.handshake()
    assert session is None or client.obj.session_reused, "the session must resume"
    in_handshake = counter.count
    record = new_record(backend, before)  # the tunnel finished the handshake before this
    assert nothing_arrived(client), "bytes (tickets) reached the client before any reply"
    client.send(REQUEST)
    wait_until(lambda: bytes(record.received) == REQUEST, 10, what="request at the backend")
    assert nothing_arrived(client), "bytes (tickets) reached the client before any reply"
    gate.speak()
    assert read_reply(client) == REPLY
    tickets = counter.count - in_handshake
    client.close_notify()
    wait_until(record.eof.is_set, 10, what="backend EOF")
    client.close()
    return client.obj, tickets


def serve(
    start_tunnel: TunnelFactory, start_backend: BackendFactory, handler: Handler, **listener: str
) -> tuple[Backend, TunnelProcess]:
    """A backend with ``handler`` and a tunnel to it (on the plane this run tests)."""
    backend = start_backend(handler)
    tunnel = start_tunnel(backend.address, **listener)
    expect_plane(tunnel)
    return backend, tunnel


def test_tls13_tickets_come_with_the_first_reply(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Full TLS 1.3 handshake: nothing reaches the client until the backend answers, then
    2 tickets arrive in front of the reply."""
    gate = GatedBackend()
    backend, tunnel = serve(start_tunnel, start_backend, gate)
    ctx = certs.client_context("1.3")
    counter = TicketCounter(ctx)
    obj, tickets = gated_exchange(tunnel, backend, gate, ctx, counter)
    assert tickets == 2, f"{tickets} NewSessionTicket(s) with the first reply, not 2"
    assert obj.session is not None and obj.session.has_ticket


def test_tls13_tickets_come_with_a_backend_that_speaks_first(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A backend that greets first (SMTP-like): the 2 tickets come in front of its greeting,
    though the client has sent nothing."""

    def greet(record: ConnRecord) -> None:
        with record.sock:
            record.sock.sendall(REPLY)
            record.read_to_end()

    _, tunnel = serve(start_tunnel, start_backend, greet)
    ctx = certs.client_context("1.3")
    counter = TicketCounter(ctx)
    client = BioClient(ctx, tunnel.address)
    client.handshake()
    assert read_reply(client) == REPLY
    assert counter.count == 2, f"{counter.count} ticket(s) with the greeting, not 2"
    client.close_notify()
    assert client.recv() == b""
    client.close()


def test_tls13_no_reply_no_ticket(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A backend that closes without a word: the client gets close_notify and no ticket."""

    def close_at_once(record: ConnRecord) -> None:
        record.sock.shutdown(socket.SHUT_WR)
        record.read_to_end()

    _, tunnel = serve(start_tunnel, start_backend, close_at_once)
    ctx = certs.client_context("1.3")
    counter = TicketCounter(ctx)
    client = BioClient(ctx, tunnel.address)
    client.handshake()
    assert client.recv() == b"", "close_notify expected (the backend's FIN)"
    assert counter.count == 0, f"{counter.count} ticket(s) without any reply"
    client.close_notify()
    client.close()
    wait_until(lambda: tunnel.conn_lines(), 10, what="summary line")


@pytest.mark.parametrize("with_key_file", [False, True], ids=["own-keys", "ticket_key_file"])
def test_tls13_resumption_renews_with_one_ticket(
    with_key_file: bool,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """Three resumptions in a row, each with the newest ticket: each gets exactly one new
    ticket, with the reply and not before it."""
    gate = GatedBackend()
    keys = {"ticket_key_file": str(tmp_path / "tickets.key")} if with_key_file else {}
    (tmp_path / "tickets.key").write_bytes(os.urandom(80))
    backend, tunnel = serve(start_tunnel, start_backend, gate, **keys)
    ctx = certs.client_context("1.3")
    counter = TicketCounter(ctx)
    obj, tickets = gated_exchange(tunnel, backend, gate, ctx, counter)
    assert tickets == 2
    for round_ in range(3):
        newest = obj.session
        assert newest is not None and newest.has_ticket
        obj, tickets = gated_exchange(tunnel, backend, gate, ctx, counter, newest)
        assert tickets == 1, f"resumption {round_ + 1}: {tickets} new ticket(s), not 1"
    wait_until(lambda: len(tunnel.conn_lines()) == 4, 10, what="four summary lines")
    assert [" resumed=yes " in line for line in tunnel.conn_lines()] == [False] + [True] * 3


def test_tls12_ticket_still_comes_in_the_handshake(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """TLS 1.2: the ticket is in the handshake, resumption needs no data exchanged, and no
    ticket comes with a reply."""
    gate = GatedBackend()
    backend, tunnel = serve(start_tunnel, start_backend, gate)
    ctx = certs.client_context("1.2")
    counter = TicketCounter(ctx)
    client = BioClient(ctx, tunnel.address)
    client.handshake()
    assert counter.count == 1, f"{counter.count} ticket(s) in the TLS 1.2 handshake"
    session = client.obj.session
    assert session is not None and session.has_ticket
    new_record(backend, 0)
    client.close_notify()
    client.close()
    obj, tickets = gated_exchange(tunnel, backend, gate, ctx, counter, session)
    assert obj.session_reused and tickets == 0


# -- F2: a client that left at once ---------------------------------------------------------


def last_flight(client: BioClient) -> bytes:
    """Run the handshake up to the client's last flight (with its Finished); return that
    flight unsent. In TLS 1.3 the client's handshake is then complete; in TLS 1.2 the
    server's Finished is still to come."""
    client.sock.sendall(client.client_hello())
    while True:
        with contextlib.suppress(ssl.SSLWantReadError):
            client.obj.do_handshake()
        flight = client.outgoing.read()
        if flight:
            return flight
        assert client.fill(), "the tunnel closed during the handshake"


def send_together(sock: socket.socket, *parts: bytes, fin: bool) -> None:
    """Send ``parts`` (and the FIN) corked, so that they leave in one segment."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for part in parts:
        sock.sendall(part)
    if fin:
        sock.shutdown(socket.SHUT_WR)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def first_connection_is(tunnel: TunnelProcess, backend: Backend, ctx: ssl.SSLContext) -> None:
    """Make a normal request; it must be the backend's first (and only) connection."""
    client = BioClient(ctx, tunnel.address)
    client.handshake()
    client.send(REQUEST)
    client.close_notify()
    assert client.recv_all() == REPLY
    client.close()
    record = new_record(backend, 0)
    wait_until(record.eof.is_set, 10, what="backend EOF")
    lines = "\n".join(tunnel.conn_lines())
    assert bytes(record.received) == REQUEST, f"the backend saw another connection first:\n{lines}"
    assert len(backend.records) == 1, lines


@pytest.mark.parametrize("version", VERSIONS)
def test_fin_with_the_finished_gets_no_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Finished + bare FIN in one segment, no data: no backend connection, reason "client
    closed: before sending anything"."""
    backend, tunnel = serve(start_tunnel, start_backend, reply_after_eof)
    client = BioClient(certs.client_context(version), tunnel.address)
    send_together(client.sock, last_flight(client), fin=True)
    _, how = read_until_closed(client.sock, timeout=10)
    assert how in ("eof", "reset"), "the tunnel must close the connection"
    client.close()
    line = wait_until(lambda: tunnel.conn_lines(), 10, what="summary line")[0]
    # Whatever the tunnel was going to do with the first connection is done by now (it
    # logged it): the backend's first connection must be the next client's.
    first_connection_is(tunnel, backend, certs.client_context(version))
    assert f" tls=TLSv{version} " in line, f"the handshake must have completed: {line}"
    assert 'reason="client closed: before sending anything"' in line, line


def tcp_gone(local_port: int, remote_port: int) -> bool:
    """Whether /proc/net/tcp no longer lists 127.0.0.1:local_port -> :remote_port (reset)."""
    pair = f"0100007F:{local_port:04X} 0100007F:{remote_port:04X}"
    return pair not in Path("/proc/net/tcp").read_text()


def test_reset_with_the_finished_gets_no_backend(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """TLS 1.3 Finished, then a reset, both there before the tunnel reads (its worker is
    stopped meanwhile): no backend connection, reason "client error" (the reset). (Not
    TLS 1.2: there the tunnel's own Finished meets the reset first.)"""
    backend, tunnel = serve(start_tunnel, start_backend, reply_after_eof)
    (worker,) = tunnel.worker_pids()
    client = BioClient(certs.client_context("1.3"), tunnel.address)
    flight, port = last_flight(client), client.sock.getsockname()[1]
    assert not tcp_gone(tunnel.port, port), "/proc/net/tcp must list the connection"
    os.kill(worker, signal.SIGSTOP)
    try:
        client.sock.sendall(flight)
        abort(client.sock)
        wait_until(lambda: tcp_gone(tunnel.port, port), 10, what="the reset at the tunnel")
    finally:
        os.kill(worker, signal.SIGCONT)
    line = wait_until(lambda: tunnel.conn_lines(), 10, what="summary line")[0]
    first_connection_is(tunnel, backend, certs.client_context("1.3"))
    assert " tls=TLSv1.3 " in line, f"the handshake must have completed: {line}"
    assert 'reason="client error: ' in line, line


@pytest.mark.parametrize("version", VERSIONS)
def test_data_then_fin_still_gets_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A request and the FIN in one segment (TLS 1.3: with the Finished too): the backend
    gets the request and EOF, the client the whole reply."""
    backend, tunnel = serve(start_tunnel, start_backend, reply_after_eof)
    ctx = certs.client_context(version)
    counter = TicketCounter(ctx)
    client = BioClient(ctx, tunnel.address)
    if version == "1.3":  # the client may write data as soon as its Finished is written
        flight = last_flight(client)
        send_together(client.sock, flight, client.encrypt(REQUEST), fin=True)
    else:  # no False Start: the request follows the server's Finished
        client.handshake()
        send_together(client.sock, client.encrypt(REQUEST), fin=True)
    record = new_record(backend, 0)
    wait_until(record.eof.is_set, 10, what="backend EOF")
    assert bytes(record.received) == REQUEST
    assert client.recv_all() == REPLY
    if version == "1.3":
        assert counter.count == 2, f"{counter.count} ticket(s) with the reply"
    client.close()
    line = wait_until(lambda: tunnel.conn_lines(), 10, what="summary line")[0]
    assert 'reason="done"' in line, line


@pytest.mark.parametrize("version", VERSIONS)
def test_close_notify_at_once_still_gets_backend(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """close_notify right after the handshake (TLS 1.3: with the Finished), no data: the
    backend is connected and sees EOF, and its reply still reaches the client."""
    backend, tunnel = serve(start_tunnel, start_backend, reply_after_eof)
    client = BioClient(certs.client_context(version), tunnel.address)
    if version == "1.3":
        flight = last_flight(client)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.obj.unwrap()
        send_together(client.sock, flight, client.outgoing.read(), fin=False)
    else:
        client.handshake()
        client.close_notify()
    record = new_record(backend, 0)
    wait_until(record.eof.is_set, 10, what="backend EOF")
    assert bytes(record.received) == b""
    assert client.recv_all() == REPLY
    client.close()
    line = wait_until(lambda: tunnel.conn_lines(), 10, what="summary line")[0]
    assert 'reason="done"' in line, line
