"""Client mode (``client = yes``): clients connect in plaintext, the backend gets TLS.

The listener's connections use :class:`PlainClientConnection`, which runs the ordinary
relay logic of :class:`tunnel.dataplane.relay.TLSSide` with a stand-in for the ``SSLObject`` that
passes bytes through unchanged: the incoming and outgoing ``MemoryBIO`` objects become
plain byte queues. That costs two extra copies per chunk, only on client-mode
listeners; the TLS termination path is untouched. The backend side is a
:class:`tunnel.dataplane.backend_tls.TLSBackendSide` (the listener's backend has ``tls = yes``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

from tunnel.dataplane.connection import ClientConnection
from tunnel.dataplane.relay_end import CLOSED, CONNECTING


class Plaintext:
    """The parts of ``ssl.SSLObject`` the relay uses, without any TLS."""

    sni = None
    session_reused = False

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self._in = incoming
        self._out = outgoing

    def read(self, size: int) -> bytes:
        return self._in.read(size)

    def write(self, data: Any) -> int:
        return self._out.write(data)

    def pending(self) -> int:
        return 0

    def unwrap(self) -> None:
        """No close_notify in plaintext: the FIN that follows says it all."""

    def shutdown(self) -> None:
        """What the relay calls (the C-level name of ``unwrap``)."""

    def cipher(self) -> None:
        return None

    def version(self) -> None:
        return None

    def selected_alpn_protocol(self) -> None:
        return None

    def getpeercert(self, binary_form: bool = False) -> None:
        return None


class PlainClientConnection(ClientConnection):
    """A plaintext client connection, relayed to a TLS backend."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.state == CLOSED:
            return  # refused by a per-IP limit or rate
        self.sslobj = cast(ssl.SSLObject, Plaintext(self._in, self._out))
        self._tls = self.sslobj
        self.cancel_timer()  # no handshake to time
        self._hello = None  # and no ClientHello to read
        self.state = CONNECTING
        self.on_handshake()

    def _pass_fin(self) -> None:
        """The backend's end (close_notify) becomes a FIN: plaintext has no close_notify.

        The client may go on sending (half-close), as with a plain TLS listener.
        """
        if not self.transport.is_closing():
            self.transport.write_eof()
