"""The byte pump: TLS on the client side, plain bytes or TLS on the backend side.

Theory of operation
-------------------
One relayed connection is two protocol objects. :class:`TLSSide` sits on the accepted
client socket; it is a :class:`tunnel.dataplane.tls_endpoint.TLSEndpoint` (its own TLS
layer over memory BIOs), which lets Tunnel (unlike asyncio's SSL transport) flush the
alert OpenSSL wrote before closing, half-close each direction separately, and time the
handshake. The backend socket has a :class:`tunnel.dataplane.plain_backend.PlainSide` or
a :class:`tunnel.dataplane.backend_tls.TLSBackendSide`; to the client side either is a
:class:`tunnel.dataplane.sides.BackendStream`.

* Reads use one buffer shared by every connection of the process
  (:mod:`tunnel.dataplane.buffer`), so an idle connection holds no read buffer.
* A chunk from the client is decrypted while the incoming BIO has bytes (no exception on
  the hot path); one from the backend is encrypted by one write. Either way the result
  goes to the other side in one call.
* Back-pressure: when one side's transport buffer passes the high-water mark, the other
  side stops reading until it drains, so memory per connection is bounded whatever the
  peers do.
* Half-close: a close_notify (or FIN) from the client becomes a FIN to the backend; a FIN
  from the backend becomes a close_notify to the client. Each direction keeps flowing
  until its own end; the connection ends when both have.
* Closing early (TLS error, backend failure, timeout, drain): whatever OpenSSL queued
  (an alert, a close_notify) is flushed, our side of the TCP stream is shut down, and the
  client's remaining input is read and discarded for a short "linger" period, so that the
  kernel does not answer unread input with an RST that could destroy the alert. A
  handshake that times out gets the alert OpenSSL sends for input that stops
  (decode_error), unless the client does not even read our last flight: then an RST.
* Timers: a ``TimerHandle`` of its own only for the handshake and linger/close deadlines.
  While relaying, the listener's :class:`tunnel.dataplane.sweep.IdleSweep` calls
  ``idle_check`` every quarter of the idle timeout (data events only set a flag, cheaper
  than re-arming a timer per chunk), so an idle connection holds no timer, and its memory
  BIOs' buffers are given back when it goes quiet (``release_buffers``).

Why the connection ended is a :class:`tunnel.observe.reasons.CloseReason` (plus a
free-text ``detail`` for the log), set where it happens. This module knows nothing of the
configuration: subclasses supply the hooks ``on_handshake`` and ``on_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import Any, cast

from tunnel._native.openssl import defer_tickets, send_tickets
from tunnel._native.peek import peer_gone
from tunnel.dataplane.buffer import get_shared_buffer
from tunnel.dataplane.buffer import view as _view
from tunnel.dataplane.hello import ClientHelloFirst
from tunnel.dataplane.relay_end import CONNECTING, HANDSHAKE, LINGER, RELAY, RelayEnd
from tunnel.dataplane.sides import BackendStream
from tunnel.dataplane.sweep import IdleSweep
from tunnel.dataplane.tls_endpoint import TLSEndpoint, describe
from tunnel.observe.reasons import CloseReason
from tunnel.wire.clienthello import ClientHelloReader

LINGER_SECONDS = 2.0
CLOSE_SECONDS = 30.0


class _NoTimer:
    """Stands for "no timer armed", so that call sites need no None check."""

    __slots__ = ()

    def cancel(self) -> None:
        """Nothing to cancel."""


_NO_TIMER = _NoTimer()
_FROM_SOCKET: Any = object()  # TLSSide.peer not set: ask the transport


class TLSSide(RelayEnd, ClientHelloFirst):
    """Client side of a relayed connection: TLS termination plus the relay logic."""

    __slots__ = (
        "_active",
        "_hs_timeout",
        "_loop",
        "_peer",
        "_quiet",
        "_sweep",
        "_tickets",
        "_timer",
        "backend_done",
        "bytes_out",
        "client_done",
        "ctx",
        "detail",
        "high_water",
        "reason",
        "state",
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
        self.sink: BackendStream | None = None  # the backend stream, once connected
        self.client_done = False
        self.backend_done = False
        self._active = False
        self._quiet = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.reason: CloseReason | None = None
        self.detail = ""  # what the log line adds to the reason
        self._peer: Any = _FROM_SOCKET
        self._hello: ClientHelloReader | None = ClientHelloReader()  # see ClientHelloFirst
        self._held = b""
        # TLS 1.3 tickets still to send, in front of the first reply (-1: deferred, the
        # count is known once the handshake is done). One send for both, and no ticket
        # work for a client that never gets a reply (as the compiled plane does).
        self._tickets = 0

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

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        """Close with OpenSSL's alert (subclasses may say more about ``exc``)."""
        self.close_early(CloseReason.HANDSHAKE_FAILED, describe(exc))

    # -- client transport events ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._start_tls(self.ctx, server_side=True)
        self._tickets = -1 if defer_tickets(self.sslobj) else 0
        self._timer = self._loop.call_later(self._hs_timeout, self._handshake_expired)

    get_buffer = get_shared_buffer  # the worker's one read buffer (a C-level callable)

    def buffer_updated(self, nbytes: int) -> None:
        state = self.state
        if state == RELAY:
            self._active = True
            self._in.write(_view[:nbytes])
            self._decrypt()
        elif state == HANDSHAKE:
            if self._hello is not None:  # the first flight: the ClientHello is read first
                self._read_hello(_view[:nbytes])
            else:
                self._in.write(_view[:nbytes])
                self._handshake()
        elif state == CONNECTING:
            self._in.write(_view[:nbytes])  # decrypted once the backend is up
            if self._in.pending >= self.high_water:
                self.transport.pause_reading()  # resumed by attach_backend

    def eof_received(self) -> bool:
        if self.state == CONNECTING and not self._in.pending and not self._tls.pending():
            # The client left before the backend is up, having sent nothing after the
            # handshake (not even close_notify, a half-close to pass on): nobody waits
            # for a reply (a TLS health check, a scanner). No backend connection: the
            # pending connect is cancelled when the transport is gone (on_closed).
            self.set_reason(CloseReason.CLIENT_CLOSED, "before sending anything")
            self.state = LINGER
            self._stop_idle_checks()
            return False
        if self.state in (RELAY, CONNECTING):
            self._client_finished()
            return True  # keep the transport to send the rest of the reply
        if self.state == HANDSHAKE:
            self._hello_to_openssl()
            # Let OpenSSL see the EOF: it fails the handshake with an alert (decode_error)
            # that close_early flushes, so a truncated ClientHello is answered in TLS.
            self._in.write_eof()
            self._handshake()
            self.set_reason(CloseReason.CLOSED_IN_HANDSHAKE)
        return False

    def client_left(self) -> bool:
        """True (and the connection is ending) if the client has closed or reset its side
        with nothing sent since the handshake: no backend is connected for it (a TLS
        health check, a scanner). Asked when the handshake is done, before connecting;
        a FIN that comes during the connect is :meth:`eof_received`'s. As the compiled
        plane's ``client_left`` (fp_connect.c)."""
        if self._in.pending or self._tls.pending():
            return False
        sock = self.transport.get_extra_info("socket")
        gone = peer_gone(sock.fileno()) if sock is not None else None
        if gone is None:
            return False
        if gone:
            self.set_reason(CloseReason.CLIENT_ERROR, describe(OSError(gone, os.strerror(gone))))
        else:
            self.set_reason(CloseReason.CLIENT_CLOSED, "before sending anything")
        self.state = LINGER
        self._stop_idle_checks()
        self.transport.close()
        return True

    # -- TLS --------------------------------------------------------------------------
    def _handshake(self) -> None:
        if not self._handshake_step():
            return
        self.cancel_timer()
        self.state = CONNECTING
        if self._tickets:
            sslobj = self.sslobj
            if sslobj.version() != "TLSv1.3":
                self._tickets = 0
            else:  # as OpenSSL would: its count after a full handshake, one after a resumption
                self._tickets = 1 if sslobj.session_reused else sslobj.context.num_tickets
        # Keep reading while the backend connects (up to high_water bytes, see
        # buffer_updated), so that a client that leaves is noticed at once and its
        # pending connect cancelled rather than completed for nobody.
        self.on_handshake()

    def release_buffers(self) -> None:
        """Free the memory BIOs' buffers where empty, a TLS backend's too (see the base)."""
        super().release_buffers()
        backend = self.sink
        if isinstance(backend, TLSEndpoint):
            backend.release_buffers()

    def _pass_fin(self) -> None:
        self._close_notify()  # the backend's FIN becomes a close_notify

    def _read_ended(self) -> None:
        self._client_finished()

    def _read_failed(self, exc: ssl.SSLError) -> None:
        self.close_early(CloseReason.CLIENT_TLS_ERROR, describe(exc))

    # -- relay ------------------------------------------------------------------------
    def attach_backend(self, backend: BackendStream, preamble: bytes = b"") -> None:
        """Start relaying to ``backend`` (``preamble``, e.g. a PROXY header, goes first)."""
        if self.state != CONNECTING:
            backend.close()
            return
        self.sink = backend
        backend.set_write_buffer_limits(high=self.high_water)
        self.transport.set_write_buffer_limits(high=self.high_water)
        if preamble:
            backend.write(preamble)
        self.state = RELAY
        self._active = True  # the sweep's next tick may be near: count a full timeout
        self._sweep.add(self)
        if self._in.pending or self._tls.pending():
            self._decrypt()
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
        if self._tickets:
            self._send_tickets()
        try:
            self._tls.write(_view[:nbytes])
        except ssl.SSLError as exc:
            self.close_early(CloseReason.TLS_ERROR, describe(exc))
            return
        self.transport.write(self._out.read())

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` (plaintext a TLS backend sent) and send it to the client."""
        if self.state < LINGER:
            self._active = True
            self.bytes_out += len(data)
            if self._tickets:
                self._send_tickets()
            error = self._encrypt(data)
            if error is not None:
                self.close_early(CloseReason.TLS_ERROR, describe(error))

    def _send_tickets(self) -> None:
        """Queue the deferred TLS 1.3 tickets: the write that follows sends them first."""
        send_tickets(self.sslobj, self._tickets)
        self._tickets = 0

    def _finish(self) -> None:
        self.set_reason(CloseReason.DONE)
        self.state = LINGER
        self._stop_idle_checks()
        if self.sink is not None:
            self.sink.close()
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():
            # Bound the wait for a client that never reads the rest of the reply; with
            # nothing buffered the transport is closed already and needs no timer.
            self._timer = self._loop.call_later(CLOSE_SECONDS, transport.abort)

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        """End the connection from our side: flush alerts/close_notify, FIN, linger, close."""
        if self.state >= LINGER:
            return
        self.set_reason(reason, detail)
        if self.state != HANDSHAKE and not self.backend_done:
            self._close_notify()
        else:
            self._flush()  # the alert OpenSSL wrote, if any
        self.state = LINGER
        self._stop_idle_checks()
        if self.sink is not None:
            self.sink.close()
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
        self._timer = _NO_TIMER
        if self.transport.get_write_buffer_size():
            # The client does not even read our last flight: an alert would only queue
            # behind it. Reset the connection.
            self.set_reason(CloseReason.HANDSHAKE_TIMEOUT)
            self.state = LINGER
            self.transport.abort()
            return
        # Input that stops mid-handshake is what OpenSSL answers with an alert
        # (decode_error, encrypted once keys are set): show it an end of input.
        self._hello_to_openssl()
        self._in.write_eof()
        with contextlib.suppress(ssl.SSLError):
            self._tls.do_handshake()
        self.close_early(CloseReason.HANDSHAKE_TIMEOUT)

    def _stop_idle_checks(self) -> None:
        self._sweep.discard(self)
        self.cancel_timer()

    def cancel_timer(self) -> None:
        """Disarm the connection's timer (and drop it: a cancelled handle is half a KiB)."""
        self._timer.cancel()
        self._timer = _NO_TIMER
