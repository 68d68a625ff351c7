"""The backend side of a relayed connection to a plain (not TLS) backend.

The same class serves a terminated connection (:class:`tunnel.dataplane.relay.TLSSide`) and
a passed-through one (:class:`tunnel.dataplane.passthrough.Passthrough`): both are a
:class:`tunnel.dataplane.relay_end.RelayEnd`.
"""

from __future__ import annotations

import asyncio
from typing import cast

from tunnel.dataplane.buffer import get_shared_buffer
from tunnel.dataplane.relay_end import RELAY, RelayEnd


class PlainSide(asyncio.BufferedProtocol):
    """Backend side of a relayed connection: forwards everything to its client side."""

    __slots__ = ("buffer_updated", "client", "preamble", "transport")

    def __init__(self, client: RelayEnd, preamble: bytes = b"") -> None:
        self.client = client
        self.preamble = preamble
        # uvloop looks ``buffer_updated`` up once, when the transport is made: reading
        # straight into the client side saves a Python call per chunk from the backend.
        self.buffer_updated = client.from_backend  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.attach_backend(self.transport, self.preamble)

    get_buffer = get_shared_buffer  # the worker's one read buffer (a C-level callable)

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
