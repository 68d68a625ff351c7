"""TLS towards backends (``tls = yes`` in a ``[backend:NAME]``): the backend side protocol.

Theory of operation
-------------------
:class:`TLSBackendSide` replaces :class:`tunnel.dataplane.plain_backend.PlainSide` on the
backend socket when the backend speaks TLS. It is a
:class:`tunnel.dataplane.tls_endpoint.TLSEndpoint` in the client role, like the client side
in the server role. It sends the PROXY header (if any) in plaintext first, as PROXY is a
TCP-level protocol, then the ClientHello. Once the handshake completes, it hands *itself*
to the client side as its :class:`tunnel.dataplane.sides.BackendStream` (:meth:`write`
encrypts, :meth:`write_eof` sends close_notify then FIN, flow control goes to the
socket), so the relay code needs no change and the plain path pays nothing for this.

Decrypted records of one socket read go to the client side in one
:meth:`~tunnel.dataplane.sides.ClientEnd.write`. A failed handshake fails the connect
attempt (through the ``ready`` future), so the next address is tried (failover).

The contexts are built by the supervisor (:mod:`tunnel.tls.backend`) and handed to the
worker with the listeners' contexts.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

from tunnel.dataplane.buffer import get_shared_buffer, view
from tunnel.dataplane.sides import ClientEnd
from tunnel.dataplane.tls_endpoint import TLSEndpoint, describe
from tunnel.observe.reasons import CloseReason


class TLSBackendSide(TLSEndpoint):
    """Backend side over TLS; to the client side it is the backend stream."""

    __slots__ = ("client", "ctx", "failed", "finished", "handshaking", "preamble", "ready", "sni")

    def __init__(
        self,
        client: ClientEnd,
        ctx: ssl.SSLContext,
        server_hostname: str | None,
        preamble: bytes,
        ready: asyncio.Future[None],
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.sni = server_hostname
        self.preamble = preamble
        self.ready = ready
        self.handshaking = True
        self.failed = False
        self.finished = False
        self.bytes_in = 0
        self.sink = client

    # -- protocol (events from the backend socket) ------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._start_tls(self.ctx, server_side=False, server_hostname=self.sni)
        if self.preamble:
            self.transport.write(self.preamble)
        self._handshake()

    get_buffer = get_shared_buffer  # the worker's one read buffer (a C-level callable)

    def buffer_updated(self, nbytes: int) -> None:
        self._in.write(view[:nbytes])
        if self.handshaking:
            self._handshake()
        else:
            self._decrypt()

    def eof_received(self) -> bool:
        if self.handshaking:
            self._fail(ConnectionError("closed during the TLS handshake"))
            return False
        self._read_ended()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.failed:
            return  # reported through ``ready``: the connect attempt failed
        if self.handshaking:
            self._fail(exc or ConnectionError("closed during the TLS handshake"))
        else:
            self.client.backend_lost(exc)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.relaying:
            self.client.transport.resume_reading()

    # -- TLS --------------------------------------------------------------------------
    def _handshake(self) -> None:
        if not self._handshake_step():
            return
        self.handshaking = False
        if not self.ready.done():
            self.ready.set_result(None)
        self.client.attach_backend(self)
        if self._in.pending:
            self._decrypt()

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        self._flush()  # our alert
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.transport.abort()

    def _read_ended(self) -> None:
        if not self.finished:
            self.finished = True
            self.client.backend_finished()

    def _read_failed(self, exc: ssl.SSLError) -> None:
        self.client.close_early(CloseReason.BACKEND_TLS_ERROR, describe(exc))

    # -- the backend stream (used by the client side) ---------------------------------
    def write(self, data: Any) -> None:
        """Encrypt ``data`` and send it to the backend."""
        error = self._encrypt(data)
        if error is not None:
            self.client.close_early(CloseReason.BACKEND_TLS_ERROR, describe(error))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The client is done sending: close_notify, then FIN."""
        self._close_notify()
        if not self.transport.is_closing():
            self.transport.write_eof()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high=high, low=low)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()
