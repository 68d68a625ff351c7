"""SNI passthrough: a client's TLS stream relayed untouched to a ``passthrough = yes`` backend.

Theory of operation
-------------------
A listener's client connection reads the ClientHello before OpenSSL sees a byte (see
:meth:`tunnel.dataplane.relay.TLSSide.on_client_hello`). When the listener's SNI routes
pick a passthrough backend, :func:`hand_over` replaces the connection's protocol on the
same transport by a :class:`Passthrough`, which then owns it: the bytes read so far (the
ClientHello and whatever followed) go to the backend first, after the optional PROXY
header, then every byte is relayed both ways as it comes. Tunnel never terminates TLS
here, so the log line shows ``-`` for what only a terminator sees (ALPN, version, cipher).

What applies as on terminated connections: the connect timeout and failover, the PROXY
header (v2 with the SNI as AUTHORITY, no SSL TLV), back-pressure at ``buffer_size``,
half-close both ways (a FIN is passed on as a FIN), the idle timeout (the listener's
sweep), drain, the per-IP limits, the listener's metrics and one summary log line.

The compiled plane does the same in C (``csrc/fp_passthrough.c``, with
:mod:`tunnel.dataplane.fastplane_passthrough`): same bytes on the wire, log line and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from tunnel.config import Address
from tunnel.dataplane.buffer import get_shared_buffer
from tunnel.dataplane.buffer import view as _view
from tunnel.dataplane.failover import PoolConnect
from tunnel.dataplane.hello import ALERT_INTERNAL_ERROR
from tunnel.dataplane.plain_backend import PlainSide
from tunnel.dataplane.pool import Member
from tunnel.dataplane.relay_end import CONNECTING, LINGER, RELAY, RelayEnd
from tunnel.dataplane.summary import format_summary, peer_text, tcp_addr
from tunnel.observe.reasons import CloseReason
from tunnel.wire import proxy_out
from tunnel.wire.clienthello import ClientHello

if TYPE_CHECKING:
    from tunnel.dataplane.connection import ClientConnection, ListenerRuntime
    from tunnel.dataplane.targets import Target

log = logging.getLogger("tunnel.conn")


def hand_over(
    conn: ClientConnection,
    target: Target,
    hello: ClientHello,
    ja4: str,
    data: memoryview | bytes,
) -> None:
    """Make ``conn``'s transport a passthrough connection to ``target`` from now on."""
    relay = Passthrough(conn, target, hello.server_name, ja4, bytes(data))  # outlives the read
    conn.handed_over()
    relay.transport.set_protocol(relay)
    relay.begin()


class Passthrough(PoolConnect, RelayEnd, asyncio.BufferedProtocol):
    """The client side of a passed-through connection; the backend side is a ``PlainSide``."""

    __slots__ = (
        "_active",
        "_pending",
        "_quiet",
        "backend_addr",
        "backend_done",
        "balancer_tlvs",
        "bytes_in",
        "bytes_out",
        "client_done",
        "connect_expired",
        "detail",
        "ip",
        "ja4",
        "listener",
        "local",
        "member",
        "peer",
        "reason",
        "sink",
        "sni",
        "started",
        "state",
        "target",
        "task",
        "transport",
        "uid",
    )

    def __init__(
        self, conn: ClientConnection, target: Target, sni: str | None, ja4: str, data: bytes
    ) -> None:
        self.listener: ListenerRuntime = conn.listener
        self.transport = conn.transport
        self.peer: Any = conn.peer
        self.local: Any = conn.local
        self.balancer_tlvs = conn.balancer_tlvs
        self.ip = conn.ip
        self.started = conn.started
        self.target = target
        self.sni = sni
        self.ja4 = ja4
        self._pending = data  # sent to the backend once connected
        self.state = CONNECTING
        self.sink: asyncio.Transport | None = None  # the backend's transport
        self.backend_addr: Any = None
        self.member: Member | None = None  # the pool member connected to (its count)
        self.client_done = self.backend_done = False
        self.bytes_in = self.bytes_out = 0
        self.reason: CloseReason | None = None
        self.detail = ""
        self.task: asyncio.Task[None] | None = None
        self.connect_expired = False
        self.uid: bytes | None = None
        self._active = False
        self._quiet = 0

    def begin(self) -> None:
        """Take over the connection's accounting and start connecting to the backend."""
        listener = self.listener
        listener.live.add(self)
        listener.stats.passed_through()
        if self.ip is not None and listener.per_ip is not None:
            listener.per_ip.handshake_ended(self.ip)  # the part Tunnel reads is over
        self.task = listener.loop.create_task(self._connect())

    # -- connecting -------------------------------------------------------------------
    async def _connect(self) -> None:
        await self._connect_pool(self.target, self._connect_one)  # as terminated ones do

    async def _connect_one(self, addr: Address) -> None:
        loop = self.listener.loop
        if addr.kind == "unix":
            await loop.create_unix_connection(lambda: PlainSide(self), addr.path)
        else:
            await loop.create_connection(lambda: PlainSide(self), addr.host, addr.port)

    def _unreachable(self, detail: str) -> None:
        self.transport.write(ALERT_INTERNAL_ERROR)  # the client awaits a ServerHello
        self.close_early(CloseReason.BACKEND_UNREACHABLE, detail)

    def _preamble(self) -> bytes:
        options = self.target.proxy
        if options is None:
            return b""
        if options.unique_id:
            self.uid = os.urandom(16)
        local = self.local if self.local is not None else self.transport.get_extra_info("sockname")
        facts = proxy_out.TLSFacts(sni=self.sni, ja4=self.ja4, terminated=False)
        return proxy_out.build_header(
            options,
            tcp_addr(self.peer),
            tcp_addr(local),
            facts,
            unique_id=self.uid,
            balancer_tlvs=self.balancer_tlvs,
        )

    def attach_backend(self, backend: Any, preamble: bytes = b"") -> None:
        """The backend is connected: send the header and the client's bytes, then relay."""
        if self.state != CONNECTING:
            backend.close()
            return
        self.sink = backend
        high = self.listener.config.buffer_size
        backend.set_write_buffer_limits(high=high)
        self.transport.set_write_buffer_limits(high=high)
        backend.write(self._preamble() + self._pending)
        self.bytes_in += len(self._pending)
        self._pending = b""
        self.state = RELAY
        self._active = True
        self.listener.idle_sweep.add(self)
        if self.client_done:
            backend.write_eof()
        self.transport.resume_reading()

    # -- client events ----------------------------------------------------------------
    get_buffer = get_shared_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == RELAY:
            self._active = True
            self.bytes_in += nbytes
            self.sink.write(bytes(_view[:nbytes]))  # type: ignore[union-attr]  # set in RELAY
        elif self.state == CONNECTING:
            self._pending += _view[:nbytes]
            if len(self._pending) >= self.listener.config.buffer_size:
                self.transport.pause_reading()  # resumed by attach_backend

    def eof_received(self) -> bool:
        self._client_finished()
        return True  # keep the transport for the rest of the reply

    # -- backend events ---------------------------------------------------------------
    def from_backend(self, nbytes: int) -> None:
        """Bytes from the backend: to the client as they are."""
        if self.state >= LINGER:
            return
        self._active = True
        self.bytes_out += nbytes
        self.transport.write(bytes(_view[:nbytes]))

    # -- ending -----------------------------------------------------------------------
    def _finish(self) -> None:
        self.set_reason(CloseReason.DONE)
        self._close()

    def _pass_fin(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()  # a FIN, as the backend sent

    def _stop_idle_checks(self) -> None:
        self.listener.idle_sweep.discard(self)

    def release_buffers(self) -> None:
        """Nothing to give back: a passed-through connection holds no TLS buffers."""

    def _close(self) -> None:
        self.state = LINGER
        self._stop_idle_checks()
        if self.sink is not None:
            self.sink.close()
        self.transport.close()

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        """End the connection from our side (no TLS of ours to close: a FIN, then close)."""
        if self.state >= LINGER:
            return
        self.set_reason(reason, detail)
        self._close()

    def on_closed(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        listener = self.listener
        listener.live.discard(self)
        listener.stats.ended(self.reason or CloseReason.CLOSED, self.bytes_in, self.bytes_out)
        if self.member is not None:
            self.member.active -= 1
        if self.ip is not None and listener.per_ip is not None:
            listener.per_ip.connection_ended(self.ip)
        listener.control.closed(listener.name)
        if log.isEnabledFor(logging.INFO):
            fields = self.summary_fields()
            log.info("%s", format_summary(fields), extra={"conn": fields})

    def summary_fields(self) -> dict[str, str | int | float]:
        """The log line's fields: those only a TLS terminator knows are ``-``."""
        fields: dict[str, str | int | float] = {
            "peer": peer_text(self.peer),
            "listener": self.listener.name,
            "sni": self.sni or "-",
            "alpn": "-",
            "tls": "-",
            "cipher": "-",
            "resumed": "-",
            "group": "-",
            "ja4": self.ja4,
            "passthrough": "yes",
            "backend": str(self.backend_addr or "-"),
            "in": self.bytes_in,
            "out": self.bytes_out,
            "duration": round(time.monotonic() - self.started, 3),
            "reason": self.reason_text,
        }
        if self.uid:
            fields["uid"] = self.uid.hex()
        return fields
