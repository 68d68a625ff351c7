"""What an idle relayed connection keeps: trimmed memory BIOs (tunnel._openssl_bio), no peer."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any, cast

import pytest
import trustme

from tunnel._native.bio import bio_capacity
from tunnel.dataplane import relay
from tunnel.dataplane.backend_tls import TLSBackendSide
from tunnel.dataplane.sweep import IdleSweep

CHUNK = 65536


class FakeTransport:
    """Just enough of a transport for TLSSide, on either side."""

    def __init__(self, peername: Any = None) -> None:
        self.sent: list[bytes] = []
        self.peername = peername

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self.sent)
        self.sent.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def feed(side: relay.TLSSide, data: bytes) -> None:
    """Deliver ``data`` from the client socket, in reads of at most READ_SIZE."""
    for start in range(0, len(data), relay.READ_SIZE):
        chunk = data[start : start + relay.READ_SIZE]
        relay._view[: len(chunk)] = chunk
        side.buffer_updated(len(chunk))


def handshake(
    loop: asyncio.AbstractEventLoop,
    version: ssl.TLSVersion,
    sweep: IdleSweep | None = None,
) -> tuple[relay.TLSSide, FakeTransport, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLSSide on a fake transport, handshaken with an in-memory client."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    client_ctx.maximum_version = client_ctx.minimum_version = version
    if sweep is None:
        sweep = IdleSweep(loop, 15.0)
    side = relay.TLSSide(loop, server_ctx, 10.0, 4 * CHUNK, sweep)
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


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS)
def test_relay_trims_after_the_handshake(
    loop: asyncio.AbstractEventLoop, version: ssl.TLSVersion
) -> None:
    side, *_ = handshake(loop, version)
    # Both BIOs carried a handshake flight; both were given back.
    assert bio_capacity(side._in) == 0
    assert bio_capacity(side._out) == 0
    side._timer.cancel()


def read_all(client: ssl.SSLObject) -> bytes:
    chunks = []
    with contextlib.suppress(ssl.SSLWantReadError):
        while True:
            chunks.append(client.read(CHUNK))
    return b"".join(chunks)


@pytest.mark.parametrize("version", VERSIONS)
def test_relay_trims_when_a_connection_goes_quiet(
    loop: asyncio.AbstractEventLoop, version: ssl.TLSVersion
) -> None:
    side, transport, client, c_in, c_out = handshake(loop, version)
    backend = FakeTransport()
    side.attach_backend(backend)  # type: ignore[arg-type]
    # A burst each way: 64 KiB chunks leave ~85 KiB buffers behind in both BIOs.
    up = bytes(range(256)) * (CHUNK // 256)
    client.write(up)
    feed(side, c_out.read())
    assert backend.take() == up
    relay._view[:CHUNK] = up[::-1]
    side.from_backend(CHUNK)
    c_in.write(transport.take())
    assert read_all(client) == up[::-1]
    assert bio_capacity(side._in) >= CHUNK and bio_capacity(side._out) >= CHUNK
    side.idle_check()  # there was traffic since the last check: nothing yet
    assert bio_capacity(side._out) >= CHUNK
    side.idle_check()  # quiet since the last check
    assert bio_capacity(side._in) == 0 and bio_capacity(side._out) == 0
    # ... and the relay goes on as before.
    client.write(b"ping")
    feed(side, c_out.read())
    assert backend.take() == b"ping"
    relay._view[:4] = b"pong"
    side.from_backend(4)
    c_in.write(transport.take())
    assert read_all(client) == b"pong"
    side._timer.cancel()


def test_peer_comes_from_the_socket_unless_set(loop: asyncio.AbstractEventLoop) -> None:
    side = relay.TLSSide(
        loop, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), 10.0, CHUNK, IdleSweep(loop, 15.0)
    )
    side.connection_made(FakeTransport(("192.0.2.1", 40000)))  # type: ignore[arg-type]
    assert side.peer == ("192.0.2.1", 40000)
    side.peer = ("198.51.100.7", 5000)  # e.g. from a PROXY header
    assert side.peer == ("198.51.100.7", 5000)
    side.peer = None  # a PROXY header without an address: None, not the socket's
    assert side.peer is None
    side._timer.cancel()


@pytest.mark.parametrize("version", VERSIONS)
def test_with_a_shared_sweep_a_relaying_connection_holds_no_timer(
    loop: asyncio.AbstractEventLoop, version: ssl.TLSVersion
) -> None:
    sweep = IdleSweep(loop, 15.0)
    side, *_ = handshake(loop, version, sweep)
    assert side._timer is relay._NO_TIMER  # the handshake deadline is gone, not just cancelled
    side.attach_backend(FakeTransport())  # type: ignore[arg-type]
    assert side._timer is relay._NO_TIMER
    assert len(sweep) == 1
    # Attaching counts as activity: the first check cannot start the countdown, so a
    # connection gets at least a full idle timeout (four quiet checks) after it.
    assert side.idle_check() is True
    for _ in range(3):
        assert side.idle_check() is True
        assert side.state == relay.RELAY
    assert side.idle_check() is False  # the fourth quiet check in a row
    assert side.state == relay.LINGER and side.reason == "idle timeout"
    assert len(sweep) == 0
    side.cancel_timer()  # the linger timer (the loop never runs here)


class FakeClient:
    """The TLSSide a TLS backend side reports to."""

    state = relay.RELAY

    def __init__(self) -> None:
        self.attached: Any = None

    def attach_backend(self, backend: Any, preamble: bytes = b"") -> None:
        self.attached = backend


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_backend_side_trims_after_its_handshake(
    loop: asyncio.AbstractEventLoop, version: ssl.TLSVersion
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("backend.test").configure_cert(server_ctx)
    server_ctx.maximum_version = server_ctx.minimum_version = version
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    client = FakeClient()
    side = TLSBackendSide(
        cast(relay.TLSSide, client), client_ctx, "backend.test", b"", loop.create_future()
    )
    transport = FakeTransport()
    side.connection_made(transport)  # type: ignore[arg-type]
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        s_in.write(transport.take())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        data = s_out.read()
        relay._view[: len(data)] = data
        side.buffer_updated(len(data))
        if client.attached is not None:
            break
    assert client.attached is side, "the backend handshake did not complete"
    # Both BIOs carried a handshake flight (the server's certificate chain, our hello);
    # both were given back.
    assert bio_capacity(side._in) == 0
    assert bio_capacity(side._out) == 0
