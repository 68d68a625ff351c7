"""The typed interfaces between the two sides of a relayed connection.

The client side (:class:`tunnel.dataplane.relay.TLSSide`) sees its backend as a
:class:`BackendStream`: a plain asyncio transport fits it as it is, and so does a
:class:`tunnel.dataplane.backend_tls.TLSBackendSide`, which encrypts what it is given. A
backend side sees the client side as a :class:`ClientEnd`, a stream it writes the
backend's plaintext into.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tunnel.observe.reasons import CloseReason


class BackendStream(Protocol):
    """What the client side uses of its backend: a plain transport, or a TLS backend side."""

    def write(self, data: Any) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ClientEnd(Protocol):
    """What a backend side uses of the client side it serves."""

    @property
    def transport(self) -> asyncio.Transport:
        """The client's socket transport (for flow control)."""
        ...

    @property
    def relaying(self) -> bool:
        """True while bytes flow both ways (reading from the client may resume)."""
        ...

    def attach_backend(self, backend: BackendStream, preamble: bytes = b"") -> None:
        """The backend is ready: start relaying (``preamble`` goes to it first)."""

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` from the backend and send it to the client."""

    def backend_finished(self) -> None:
        """The backend ended its direction."""

    def backend_lost(self, exc: Exception | None) -> None:
        """The backend connection is gone."""

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        """End the whole connection now, for ``reason``."""
