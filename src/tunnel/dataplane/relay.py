"""The byte pump: TLS on the client side, plain bytes on the backend side.

Theory of operation
-------------------
One relayed connection is two protocol objects. :class:`TLSSide` sits on the accepted
client socket and runs its own TLS layer: an ``ssl.SSLObject`` over two ``MemoryBIO``
objects, so this code decides when bytes hit the socket. That is what lets Tunnel
(unlike asyncio's SSL transport) flush the alert OpenSSL wrote before closing, half-close
each direction separately, and time the handshake. :class:`PlainSide` sits on the backend
socket and forwards everything to its ``TLSSide``.

* Reads use one buffer shared by every connection of the process (``BufferedProtocol``):
  each chunk is consumed synchronously (copied into the TLS layer or the peer's transport)
  before the next read, so an idle connection holds no read buffer.
* Client to backend: the chunk goes into the incoming BIO; records are decrypted while
  the BIO has bytes (no exception on the hot path) and the plaintext is written to the
  backend in one call.
* Backend to client: the chunk is encrypted by one ``SSLObject.write`` and the outgoing
  BIO is written to the client in one call.
* Back-pressure: when one side's transport buffer passes the high-water mark, the other
  side stops reading until it drains, so memory per connection is bounded whatever the
  peers do.
* Half-close: a close_notify (or FIN) from the client becomes a FIN to the backend; a FIN
  from the backend becomes a close_notify to the client. Each direction keeps flowing
  until its own end; the connection ends when both have.
* Closing early (TLS error, backend failure, timeout, drain): whatever OpenSSL queued
  (an alert, a close_notify) is flushed, our side of the TCP stream is shut down, and the
  client's remaining input is read and discarded for a short "linger" period, so that the
  kernel does not answer unread input with an RST that could destroy the alert.
* Timers: a ``TimerHandle`` of its own only for the handshake deadline and the
  linger/close deadline. While relaying, the listener's :class:`tunnel.dataplane.sweep.IdleSweep`
  calls ``idle_check`` every quarter of the idle timeout for all its connections (data
  events only set a flag, which is cheaper than re-arming a timer per chunk), so an idle
  connection holds no timer.
* Memory: OpenSSL's memory BIOs keep the capacity of the largest chunk they carried, so
  their buffers are given back (``release_buffers``) after the handshake and each time
  the idle check finds the connection quiet; an idle connection holds no relay buffer.

This module knows nothing of the configuration: subclasses supply the hooks
``on_handshake`` and ``on_closed``.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from functools import partial
from typing import Any, cast

from tunnel._native.bio import trim_bio
from tunnel.dataplane.sweep import IdleSweep

# Socket reads go into one shared buffer; 256 KiB per read means fewer Python calls per
# megabyte in bulk transfers (measured: ~6 % less CPU per MB than 64 KiB, bench/README.md).
READ_SIZE = 262144
# SSL_read returns at most one record (16 KiB of plaintext): asking for more only makes
# CPython allocate (and then shrink) a bigger bytes object on every call.
RECORD_SIZE = 16384
LINGER_SECONDS = 2.0
CLOSE_SECONDS = 30.0

_buffer = bytearray(READ_SIZE)
_view = memoryview(_buffer)
# Both protocols' ``get_buffer``: uvloop calls it before every read, so it is a C-level
# callable rather than a Python method, one Python call fewer per chunk. It ignores the
# size hint and always returns the shared buffer: next(repeat(_view), sizehint) is _view.
_get_shared_buffer = partial(next, itertools.repeat(_view))

HANDSHAKE, CONNECTING, RELAY, LINGER, CLOSED = range(5)


class _NoTimer:
    """Stands for "no timer armed", so that call sites need no None check."""

    __slots__ = ()

    def cancel(self) -> None:
        """Nothing to cancel."""


_NO_TIMER = _NoTimer()
_FROM_SOCKET: Any = object()  # TLSSide.peer not set: ask the transport


class TLSSide(asyncio.BufferedProtocol):
    """Client side of a relayed connection: TLS termination plus the relay logic."""

    __slots__ = (
        "_active",
        "_hs_timeout",
        "_in",
        "_loop",
        "_out",
        "_peer",
        "_quiet",
        "_sweep",
        "_timer",
        "_tls",
        "backend",
        "backend_done",
        "bytes_in",
        "bytes_out",
        "client_done",
        "ctx",
        "high_water",
        "reason",
        "sslobj",
        "state",
        "transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: ssl.SSLContext,
        handshake_timeout: float,
        high_water: int,
        sweep: IdleSweep,
    ) -> None:
        self._loop = loop
        # Idle checks (every quarter of the idle timeout) come from the listener's sweep.
        self._sweep = sweep
        self._timer: asyncio.TimerHandle | _NoTimer = _NO_TIMER
        self.ctx = ctx
        self._hs_timeout = handshake_timeout
        self.high_water = high_water
        self.state = HANDSHAKE
        self.backend: asyncio.Transport | None = None
        self.client_done = False
        self.backend_done = False
        self._active = False
        self._quiet = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reason = ""
        self._peer: Any = _FROM_SOCKET

    @property
    def peer(self) -> Any:
        """The client's address: the socket's peer unless set (e.g. from a PROXY header).

        Asked of the transport when needed rather than kept: a tuple, a string and an int
        per connection (~150 bytes) that most connections only need for the log line.
        """
        peer = self._peer
        if peer is _FROM_SOCKET:
            return self.transport.get_extra_info("peername")
        return peer

    @peer.setter
    def peer(self, value: Any) -> None:
        self._peer = value

    # -- hooks for subclasses ---------------------------------------------------------
    def on_handshake(self) -> None:
        """Called once the handshake completed; must eventually call ``attach_backend``."""

    def on_closed(self) -> None:
        """Called once when the client connection is gone."""

    def handshake_failed(self, exc: ssl.SSLError) -> str:
        """The close reason for a failed handshake (subclasses may say more)."""
        return f"handshake failed: {_describe(exc)}"

    # -- client transport events ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.sslobj = self.ctx.wrap_bio(self._in, self._out, server_side=True)
        # The C-level object under the SSLObject: the per-chunk calls skip SSLObject's
        # Python wrappers (same methods, same behaviour; ``unwrap`` is ``shutdown``).
        self._tls = self.sslobj._sslobj  # type: ignore[attr-defined]
        self._timer = self._loop.call_later(self._hs_timeout, self._handshake_expired)

    get_buffer = _get_shared_buffer  # see above; returns _view

    def buffer_updated(self, nbytes: int) -> None:
        state = self.state
        if state == RELAY:
            self._active = True
            self._in.write(_view[:nbytes])
            self._read_tls()
        elif state == HANDSHAKE:
            self._in.write(_view[:nbytes])
            self._handshake()
        elif state == CONNECTING:
            self._in.write(_view[:nbytes])  # decrypted once the backend is up
            if self._in.pending >= self.high_water:
                self.transport.pause_reading()  # resumed by attach_backend

    def eof_received(self) -> bool:
        if self.state in (RELAY, CONNECTING):
            self._client_finished("client closed")
            return True  # keep the transport to send the rest of the reply
        if self.state == HANDSHAKE:
            # Let OpenSSL see the EOF: it fails the handshake with an alert (decode_error)
            # that close_early flushes, so a truncated ClientHello is answered in TLS.
            self._in.write_eof()
            self._handshake()
            self.reason = "client closed during handshake"
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.reason:
            self.reason = f"client error: {_describe(exc)}"
        self.state = CLOSED
        self._stop_idle_checks()
        backend = self.backend
        if backend is not None and not backend.is_closing():
            if exc is None:
                backend.close()
            else:
                backend.abort()
        self.on_closed()

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and not self.backend.is_closing():
            self.backend.resume_reading()

    # -- TLS --------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._out.pending:
            self.transport.write(self._out.read())

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self.close_early(self.handshake_failed(exc))
            return
        self.cancel_timer()
        self._flush()
        self.release_buffers()
        self.state = CONNECTING
        # Keep reading while the backend connects (up to high_water bytes, see
        # buffer_updated), so that a client that leaves is noticed at once and its
        # pending connect cancelled rather than completed for nobody.
        self.on_handshake()

    def release_buffers(self) -> None:
        """Free the memory BIOs' buffers where they are empty (OpenSSL never shrinks them).

        A BIO keeps the capacity of the largest chunk that went through it, plus a third:
        the handshake flights (~1.6 KiB per connection) after the handshake, ~85 KiB after
        a 64 KiB chunk, ~340 KiB after a READ_SIZE one. Called after the handshake and
        whenever the connection goes quiet (the idle check), also for a TLS backend's
        BIOs. About 1 µs per BIO: fine once per connection or quiet period, too dear per
        chunk (a chunk would then also allocate and fault in a fresh buffer).
        """
        trim_bio(self._in)
        trim_bio(self._out)
        release = getattr(self.backend, "release_buffers", None)  # a TLS backend's
        if release is not None:
            release()

    def _read_tls(self) -> None:
        incoming = self._in
        read = self._tls.read
        data = b""
        eof = False
        error: ssl.SSLError | None = None
        try:
            if incoming.pending:
                # A request usually fits one record: one read, no list, no join.
                data = read(RECORD_SIZE)
                # close_notify: CPython's read() returns b"" instead of raising
                # SSLZeroReturnError when only our side received a shutdown.
                eof = not data
                if incoming.pending and data:
                    chunks = [data]
                    try:
                        while incoming.pending:
                            more = read(RECORD_SIZE)
                            if not more:
                                eof = True
                                break
                            chunks.append(more)
                    finally:  # records decrypted before an error are still relayed
                        data = b"".join(chunks)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:
            error = exc
        if data:
            self.bytes_in += len(data)
            self.backend.write(data)  # type: ignore[union-attr]  # always set in RELAY
        if error is not None:
            self.close_early(f"TLS error from client: {_describe(error)}")
            return
        if self._out.pending:  # alerts, KeyUpdate replies
            self.transport.write(self._out.read())
        if eof:
            self._client_finished("client closed")

    def _send_close_notify(self) -> None:
        try:
            self._tls.shutdown()
        except ssl.SSLWantReadError:
            pass  # ours is sent; the client's may come later
        except (ssl.SSLError, ValueError):
            pass
        self._flush()

    # -- relay ------------------------------------------------------------------------
    def attach_backend(self, backend: asyncio.Transport, preamble: bytes = b"") -> None:
        """Start relaying to ``backend`` (``preamble``, e.g. a PROXY header, goes first)."""
        if self.state != CONNECTING:
            backend.close()
            return
        self.backend = backend
        backend.set_write_buffer_limits(high=self.high_water)
        self.transport.set_write_buffer_limits(high=self.high_water)
        if preamble:
            backend.write(preamble)
        self.state = RELAY
        self._active = True  # the sweep's next tick may be near: count a full timeout
        self._sweep.add(self)
        if self._in.pending or self._tls.pending():
            self._read_tls()
        if self.client_done and backend.can_write_eof():
            backend.write_eof()
        if self.state == RELAY:
            self.transport.resume_reading()

    def from_backend(self, nbytes: int) -> None:
        """Encrypt ``nbytes`` of the shared buffer and send them to the client."""
        if self.state >= LINGER:
            return
        self._active = True
        self.bytes_out += nbytes
        try:
            self._tls.write(_view[:nbytes])
        except ssl.SSLError as exc:
            self.close_early(f"TLS error: {_describe(exc)}")
            return
        self.transport.write(self._out.read())

    def backend_finished(self) -> None:
        """The backend sent FIN: pass it on as close_notify."""
        if self.backend_done or self.state >= LINGER:
            return
        self.backend_done = True
        self._send_close_notify()
        if self.client_done:
            self._finish("done")

    def backend_lost(self, exc: Exception | None) -> None:
        """The backend connection is gone (closed by us, or reset/closed by the backend)."""
        if self.state >= LINGER:
            return
        if exc is not None:
            self.close_early(f"backend error: {_describe(exc)}")
        elif not (self.backend_done and self.client_done):
            self.close_early("backend closed")

    def _client_finished(self, reason: str) -> None:
        if self.client_done:
            return
        self.client_done = True
        backend = self.backend
        if backend is not None and backend.can_write_eof() and not backend.is_closing():
            backend.write_eof()
        if self.backend_done:
            self._finish("done")
        elif not self.reason:
            self.reason = reason

    def _finish(self, reason: str) -> None:
        self.reason = reason
        self.state = LINGER
        self._stop_idle_checks()
        if self.backend is not None:
            self.backend.close()
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():
            # Bound the wait for a client that never reads the rest of the reply; with
            # nothing buffered the transport is closed already and needs no timer.
            self._timer = self._loop.call_later(CLOSE_SECONDS, transport.abort)

    def close_early(self, reason: str) -> None:
        """End the connection from our side: flush alerts/close_notify, FIN, linger, close."""
        if self.state >= LINGER:
            return
        self.reason = reason
        if self.state != HANDSHAKE and not self.backend_done:
            self._send_close_notify()
        else:
            self._flush()  # the alert OpenSSL wrote, if any
        self.state = LINGER
        self._stop_idle_checks()
        if self.backend is not None:
            self.backend.close()
        transport = self.transport
        if transport.is_closing():
            return
        try:
            transport.write_eof()
            transport.resume_reading()
        except (OSError, RuntimeError):
            transport.abort()
            return
        self._timer = self._loop.call_later(LINGER_SECONDS, transport.abort)

    # -- timers -----------------------------------------------------------------------
    def _handshake_expired(self) -> None:
        self.reason = "handshake timeout"
        self.state = LINGER
        self.transport.abort()

    def idle_check(self) -> bool:
        """The check run every quarter of the idle timeout while relaying.

        Data events only set ``_active`` (cheaper than re-arming a timer per chunk); four
        checks in a row without activity close the connection. Returns False once the
        connection needs no more checks.
        """
        if self.state != RELAY:
            return False
        if self._active:
            self._active = False
            self._quiet = 0
        else:
            self._quiet += 1
            if self._quiet >= 4:
                self.close_early("idle timeout")
                return False
            if self._quiet == 1:
                self.release_buffers()  # went quiet: a burst's big buffers are not needed now
        return True

    def _stop_idle_checks(self) -> None:
        self._sweep.discard(self)
        self.cancel_timer()

    def cancel_timer(self) -> None:
        """Disarm the connection's timer (and drop it: a cancelled handle is half a KiB)."""
        self._timer.cancel()
        self._timer = _NO_TIMER


class PlainSide(asyncio.BufferedProtocol):
    """Backend side of a relayed connection: forwards everything to its TLSSide."""

    __slots__ = ("buffer_updated", "client", "preamble", "transport")

    def __init__(self, client: TLSSide, preamble: bytes = b"") -> None:
        self.client = client
        self.preamble = preamble
        # uvloop looks ``buffer_updated`` up once, when the transport is made: reading
        # straight into the client side saves a Python call per chunk from the backend.
        self.buffer_updated = client.from_backend  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.attach_backend(self.transport, self.preamble)

    get_buffer = _get_shared_buffer  # see above; returns _view

    def eof_received(self) -> bool:
        self.client.backend_finished()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.backend_lost(exc)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        client = self.client
        if client.state == RELAY:
            client.transport.resume_reading()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__
