"""The TLS endpoint on both sides, driven through the protocol API on fake transports.

What an idle relayed connection keeps (trimmed memory BIOs, no timer), what a handshake
timeout sends, and how a TLS backend side hands plaintext on. Everything is observed
from outside: bytes written to the fake transports, the memory figure
``buffer_capacity()``, timers armed on a fake loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from tunnel.dataplane import relay
from tunnel.dataplane.backend_tls import TLSBackendSide
from tunnel.dataplane.sides import BackendStream
from tunnel.dataplane.sweep import IdleSweep
from tunnel.observe.reasons import CloseReason
from tunnel.tls.eof import strict_eof

CHUNK = 65536
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
ALERT = 0x15  # TLS record type of an alert


class FakeTransport:
    """Just enough of a transport for either side; records what was done to it."""

    def __init__(self, peername: Any = None) -> None:
        self.sent: list[bytes] = []
        self.peername = peername
        self.buffered = 0  # what get_write_buffer_size() reports
        self.eof_written = self.aborted = self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.sent)
        self.sent.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """A clock that only moves when told to; it counts the timers armed on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def armed(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled and t.when > self.now - 1e-9]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in list(self.timers):
            if not timer.cancelled and timer.when <= self.now:
                timer.cancelled = True  # fired
                timer.callback()


def feed(side: Any, data: bytes) -> None:
    """Deliver ``data`` from the socket as a BufferedProtocol read (get_buffer, then n)."""
    while data:
        buffer = side.get_buffer(len(data))
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        side.buffer_updated(n)
        data = data[n:]


def tls_pair(version: ssl.TLSVersion, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    # As every listener context is built (tls/contexts.py): on CPython <= 3.11.2 a bare
    # context would take an EOF mid-handshake for close_notify and send no alert.
    server_ctx = strict_eof(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ca.issue_cert(name).configure_cert(server_ctx)
    server_ctx.maximum_version = server_ctx.minimum_version = version
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def make_side(loop: FakeLoop, ctx: ssl.SSLContext, sweep: IdleSweep | None = None) -> relay.TLSSide:
    sweep = sweep if sweep is not None else IdleSweep(loop, 15.0)  # type: ignore[arg-type]
    return relay.TLSSide(loop, ctx, 10.0, 4 * CHUNK, sweep)  # type: ignore[arg-type]


def handshake(
    loop: FakeLoop, version: ssl.TLSVersion, sweep: IdleSweep | None = None
) -> tuple[relay.TLSSide, FakeTransport, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLSSide on a fake transport, handshaken with an in-memory client."""
    server_ctx, client_ctx = tls_pair(version, "localhost")
    side = make_side(loop, server_ctx, sweep)
    transport = FakeTransport()
    side.connection_made(transport)  # type: ignore[arg-type]
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        feed(side, c_out.read())
        c_in.write(transport.take())
        if side.state == relay.CONNECTING:
            break
    assert side.state == relay.CONNECTING
    client.do_handshake()  # the client finishes with the server's last flight
    assert client.version() == side.sslobj.version()
    return side, transport, client, c_in, c_out


def read_all(client: ssl.SSLObject) -> bytes:
    chunks = []
    with contextlib.suppress(ssl.SSLWantReadError):
        while True:
            chunks.append(client.read(CHUNK))
    return b"".join(chunks)


@pytest.mark.parametrize("version", VERSIONS)
def test_relay_trims_after_the_handshake(version: ssl.TLSVersion) -> None:
    side, *_ = handshake(FakeLoop(), version)
    # Both BIOs carried a handshake flight; both were given back.
    assert side.buffer_capacity() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_relay_trims_when_a_connection_goes_quiet(version: ssl.TLSVersion) -> None:
    side, transport, client, c_in, c_out = handshake(FakeLoop(), version)
    backend = FakeTransport()
    side.attach_backend(backend)
    # A burst each way: 64 KiB chunks leave ~85 KiB buffers behind in both BIOs.
    up = bytes(range(256)) * (CHUNK // 256)
    client.write(up)
    feed(side, c_out.read())
    assert backend.take() == up
    down = up[::-1]
    side.get_buffer(CHUNK)[:CHUNK] = down  # as the backend's protocol reads it
    side.from_backend(CHUNK)
    c_in.write(transport.take())
    assert read_all(client) == down
    assert side.buffer_capacity() >= 2 * CHUNK
    side.idle_check()  # there was traffic since the last check: nothing yet
    assert side.buffer_capacity() >= CHUNK
    side.idle_check()  # quiet since the last check
    assert side.buffer_capacity() == 0
    # ... and the relay goes on as before.
    client.write(b"ping")
    feed(side, c_out.read())
    assert backend.take() == b"ping"
    side.get_buffer(4)[:4] = b"pong"
    side.from_backend(4)
    c_in.write(transport.take())
    assert read_all(client) == b"pong"


def test_peer_comes_from_the_socket_unless_set() -> None:
    side = make_side(FakeLoop(), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    side.connection_made(FakeTransport(("192.0.2.1", 40000)))  # type: ignore[arg-type]
    assert side.peer == ("192.0.2.1", 40000)
    side.peer = ("198.51.100.7", 5000)  # e.g. from a PROXY header
    assert side.peer == ("198.51.100.7", 5000)
    side.peer = None  # a PROXY header without an address: None, not the socket's
    assert side.peer is None


@pytest.mark.parametrize("version", VERSIONS)
def test_with_a_shared_sweep_a_relaying_connection_holds_no_timer(
    version: ssl.TLSVersion,
) -> None:
    loop = FakeLoop()
    sweep = IdleSweep(loop, 15.0)  # type: ignore[arg-type]
    side, *_ = handshake(loop, version, sweep)
    assert loop.armed() == []  # the handshake deadline is gone, not left to fire
    side.attach_backend(FakeTransport())
    assert len(loop.armed()) == 1  # the listener's sweep, shared by all its connections
    assert len(sweep) == 1
    # Attaching counts as activity: the first check cannot start the countdown, so a
    # connection gets at least a full idle timeout (four quiet checks) after it.
    assert side.idle_check() is True
    for _ in range(3):
        assert side.idle_check() is True
        assert side.state == relay.RELAY
    assert side.idle_check() is False  # the fourth quiet check in a row
    assert side.state == relay.LINGER and side.reason is CloseReason.IDLE_TIMEOUT
    assert len(sweep) == 0


def test_a_handshake_timeout_sends_an_alert_then_lingers() -> None:
    """Half a ClientHello, then silence: decode_error, FIN, and an RST only after linger."""
    loop = FakeLoop()
    server_ctx, client_ctx = tls_pair(ssl.TLSVersion.TLSv1_3, "localhost")
    side = make_side(loop, server_ctx)
    transport = FakeTransport()
    side.connection_made(transport)  # type: ignore[arg-type]
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    hello = c_out.read()
    feed(side, hello[: len(hello) // 2])
    loop.advance(9.9)
    assert transport.take() == b"" and side.state == relay.HANDSHAKE
    loop.advance(0.2)  # the 10 s handshake timeout
    sent = transport.take()
    assert sent[0] == ALERT and sent[-2:] == b"\x02\x32"  # fatal decode_error
    assert transport.eof_written and not transport.aborted
    assert side.reason is CloseReason.HANDSHAKE_TIMEOUT
    loop.advance(relay.LINGER_SECONDS)  # the client never closed: reset it
    assert transport.aborted


def test_a_handshake_timeout_resets_a_client_that_does_not_read() -> None:
    """Our flight still sits in the transport's buffer: no alert behind it, an RST now."""
    loop = FakeLoop()
    side = make_side(loop, tls_pair(ssl.TLSVersion.TLSv1_3, "localhost")[0])
    transport = FakeTransport()
    side.connection_made(transport)  # type: ignore[arg-type]
    transport.buffered = 4096
    loop.advance(10.0)
    assert transport.take() == b"" and transport.aborted and not transport.eof_written
    assert side.reason is CloseReason.HANDSHAKE_TIMEOUT


class FakeClient:
    """The client side a TLS backend side reports to (a ClientEnd)."""

    def __init__(self) -> None:
        self.transport: Any = FakeTransport()
        self.relaying = True
        self.attached: BackendStream | None = None
        self.received: list[bytes] = []
        self.finished = False
        self.closed: tuple[CloseReason, str] | None = None

    def attach_backend(self, backend: BackendStream, preamble: bytes = b"") -> None:
        self.attached = backend

    def write(self, data: bytes) -> None:
        self.received.append(data)

    def backend_finished(self) -> None:
        self.finished = True

    def backend_lost(self, exc: Exception | None) -> None:
        pass

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        self.closed = (reason, detail)


def backend_handshake(
    version: ssl.TLSVersion, preamble: bytes = b""
) -> tuple[TLSBackendSide, FakeClient, FakeTransport, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLSBackendSide on a fake transport, handshaken with an in-memory server."""
    server_ctx, client_ctx = tls_pair(version, "backend.test")
    client = FakeClient()
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[None] = loop.create_future()
    side = TLSBackendSide(client, client_ctx, "backend.test", preamble, ready)
    transport = FakeTransport()
    side.connection_made(transport)  # type: ignore[arg-type]
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    sent = transport.take()
    assert sent.startswith(preamble)
    s_in.write(sent[len(preamble) :])
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        feed(side, s_out.read())
        s_in.write(transport.take())
        if client.attached is not None:
            break
    assert client.attached is side, "the backend handshake did not complete"
    assert ready.done() and ready.exception() is None  # the connect attempt succeeded
    loop.close()
    return side, client, transport, server, s_in, s_out


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_backend_side_trims_after_its_handshake(version: ssl.TLSVersion) -> None:
    side, *_ = backend_handshake(version, preamble=b"PROXY UNKNOWN\r\n")
    # Both BIOs carried a handshake flight (the server's certificate chain, our hello);
    # both were given back.
    assert side.buffer_capacity() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_backend_side_relays_both_ways_and_passes_close_notify_on(
    version: ssl.TLSVersion,
) -> None:
    side, client, transport, server, s_in, s_out = backend_handshake(version)
    side.write(b"request")
    s_in.write(transport.take())
    assert read_all(server) == b"request"
    reply = bytes(range(256)) * 256  # 64 KiB: four records, one socket read
    server.write(reply)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()
    feed(side, s_out.read())
    assert client.received == [reply]  # one call for the read, not one per record
    assert client.finished
    side.write_eof()  # the client is done too: close_notify, then FIN
    s_in.write(transport.take())
    server.unwrap()  # completes: our close_notify arrived
    assert transport.eof_written


def test_tls_backend_side_reports_a_bad_record() -> None:
    side, client, _transport, _server, _s_in, _s_out = backend_handshake(ssl.TLSVersion.TLSv1_3)
    feed(side, b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data that fails
    assert client.closed is not None and client.closed[0] is CloseReason.BACKEND_TLS_ERROR
