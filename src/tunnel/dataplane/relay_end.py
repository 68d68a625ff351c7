"""What every client side of a relayed connection does alike, terminated or passed through.

:class:`RelayEnd` is a mixin (no slots of its own) of :class:`tunnel.dataplane.relay.TLSSide`
(Tunnel terminates TLS) and :class:`tunnel.dataplane.passthrough.Passthrough` (the client's
TLS goes to the backend untouched). Both keep the backend stream in ``sink`` and share here
the transport callbacks that do not touch a byte: flow control between the two sockets,
the end of each direction, the loss of either socket, the reason the connection ended and
the idle check. What differs comes from hooks the class supplies: how a backend FIN reaches
the client (``_pass_fin``), how the connection ends (``_finish``, ``close_early``), what
stops its checks (``_stop_idle_checks``) and what it counts once gone (``on_closed``).
The per-chunk paths (``buffer_updated``, ``from_backend``) stay in each class.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tunnel.dataplane.tls_endpoint import describe
from tunnel.observe.reasons import CloseReason

# The states of a client side, in the order they follow each other.
HANDSHAKE, CONNECTING, RELAY, LINGER, CLOSED = range(5)


class RelayEnd:
    """Mixin: the relay callbacks shared by the terminated and the passed-through client side."""

    if not TYPE_CHECKING:
        # No slots of its own (the mixing class holds the state, in its slots); hidden from
        # mypy, which would otherwise refuse the assignments to slots of the subclass.
        __slots__ = ()

    # Set by the class that mixes this in (in its own slots).
    transport: asyncio.Transport
    sink: Any  # the backend stream, once connected
    state: int
    client_done: bool
    backend_done: bool
    reason: CloseReason | None
    detail: str
    _active: bool
    _quiet: int

    if TYPE_CHECKING:  # a stub only: a method here would hide TLSEndpoint's in the MRO

        def release_buffers(self) -> None:
            """Give back buffers a quiet connection does not need."""

    # -- hooks ------------------------------------------------------------------------
    def _pass_fin(self) -> None:
        """Pass the backend's FIN on to the client."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Both directions ended: close the connection."""
        raise NotImplementedError

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        """End the connection from our side."""
        raise NotImplementedError

    def _stop_idle_checks(self) -> None:
        """Take the connection off the idle sweep (and disarm its timers)."""
        raise NotImplementedError

    def on_closed(self) -> None:
        """Called once when the client connection is gone."""

    def attach_backend(self, backend: Any, preamble: bytes = b"") -> None:
        """The backend is connected: start relaying (``preamble`` goes to it first)."""
        raise NotImplementedError

    def from_backend(self, nbytes: int) -> None:
        """``nbytes`` of the shared buffer came from the backend."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------
    @property
    def relaying(self) -> bool:
        """True while bytes flow both ways (reading from the client may resume)."""
        return self.state == RELAY

    @property
    def reason_text(self) -> str:
        """Why the connection ended, as its log line says it."""
        return (self.reason or CloseReason.CLOSED).text(self.detail)

    def set_reason(self, reason: CloseReason, detail: str = "") -> None:
        """Record why the connection ends (the last word wins)."""
        self.reason = reason
        self.detail = detail

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.reason is None:
            self.set_reason(CloseReason.CLIENT_ERROR, describe(exc))
        self.state = CLOSED
        self._stop_idle_checks()
        backend = self.sink
        if backend is not None and not backend.is_closing():
            if exc is None:
                backend.close()
            else:
                backend.abort()
        self.on_closed()

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_reading()

    def resume_writing(self) -> None:
        if self.sink is not None and not self.sink.is_closing():
            self.sink.resume_reading()

    def _client_finished(self) -> None:
        """The client ended its direction: pass it on as a FIN to the backend."""
        if self.client_done:
            return
        self.client_done = True
        backend = self.sink
        if backend is not None and backend.can_write_eof() and not backend.is_closing():
            backend.write_eof()
        if self.backend_done:
            self._finish()
        elif self.reason is None:
            self.set_reason(CloseReason.CLIENT_CLOSED)

    def backend_finished(self) -> None:
        """The backend sent FIN: pass it on to the client."""
        if self.backend_done or self.state >= LINGER:
            return
        self.backend_done = True
        self._pass_fin()
        if self.client_done:
            self._finish()

    def backend_lost(self, exc: Exception | None) -> None:
        """The backend connection is gone (closed by us, or reset/closed by the backend)."""
        if self.state >= LINGER:
            return
        if exc is not None:
            self.close_early(CloseReason.BACKEND_ERROR, describe(exc))
        elif not (self.backend_done and self.client_done):
            self.close_early(CloseReason.BACKEND_CLOSED)

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
                self.close_early(CloseReason.IDLE_TIMEOUT)
                return False
            if self._quiet == 1:
                self.release_buffers()  # went quiet: a burst's big buffers are not needed now
        return True
