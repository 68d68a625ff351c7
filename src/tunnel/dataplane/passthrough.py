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
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, cast

from tunnel.dataplane.buffer import get_shared_buffer
from tunnel.dataplane.buffer import view as _view
from tunnel.dataplane.hello import ALERT_INTERNAL_ERROR
from tunnel.dataplane.pool import Member
from tunnel.dataplane.relay import CLOSED, CONNECTING, LINGER, RELAY
from tunnel.dataplane.summary import format_summary, peer_text, tcp_addr
from tunnel.dataplane.tls_endpoint import describe
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


class Passthrough(asyncio.BufferedProtocol):
    """The client side of a passed-through connection; the backend side is :class:`_Backend`."""

    __slots__ = (
        "_active",
        "_pending",
        "_quiet",
        "backend",
        "backend_addr",
        "backend_done",
        "balancer_tlvs",
        "bytes_in",
        "bytes_out",
        "client_done",
        "detail",
        "ip",
        "ja4",
        "listener",
        "local",
        "member",
        "peer",
        "reason",
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
        self.backend: asyncio.Transport | None = None
        self.backend_addr: Any = None
        self.member: Member | None = None  # the pool member connected to (its count)
        self.client_done = self.backend_done = False
        self.bytes_in = self.bytes_out = 0
        self.reason: CloseReason | None = None
        self.detail = ""
        self.task: asyncio.Task[None] | None = None
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
        cfg = self.target.backend
        loop = self.listener.loop
        pool = self.target.pool
        members = pool.candidates(time.monotonic())  # as for terminated connections
        failures = [] if members else [f"backend {pool.name} has no address (DNS)"]
        for member in members:
            addr = self.backend_addr = member.address
            stats = self.listener.backend_stats(addr)
            begun = time.monotonic()
            try:
                if addr.kind == "unix":
                    connecting = loop.create_unix_connection(lambda: _Backend(self), addr.path)
                else:
                    connecting = loop.create_connection(
                        lambda: _Backend(self), addr.host, addr.port
                    )
                await asyncio.wait_for(connecting, cfg.connect_timeout)
            except TimeoutError:
                failures.append(f"{addr}: connect timed out")
                stats.failed("timeout")
            except OSError as exc:
                failures.append(f"{addr}: {exc.strerror or exc}")
                stats.failed("refused" if isinstance(exc, ConnectionRefusedError) else "error")
            else:
                stats.connected(time.monotonic() - begun)
                pool.succeeded(member)
                member.active += 1
                self.member = member
                self.task = None
                return
            pool.failed(member, time.monotonic(), failures[-1])
            if self.state != CONNECTING:
                return  # the client went away meanwhile
        self.transport.write(ALERT_INTERNAL_ERROR)  # the client awaits a ServerHello
        self.close_early(CloseReason.BACKEND_UNREACHABLE, "; ".join(failures))

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

    def attach(self, backend: asyncio.Transport) -> None:
        """The backend is connected: send the header and the client's bytes, then relay."""
        if self.state != CONNECTING:
            backend.close()
            return
        self.backend = backend
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
            self.backend.write(bytes(_view[:nbytes]))  # type: ignore[union-attr]  # set in RELAY
        elif self.state == CONNECTING:
            self._pending += _view[:nbytes]
            if len(self._pending) >= self.listener.config.buffer_size:
                self.transport.pause_reading()  # resumed by attach

    def eof_received(self) -> bool:
        self.client_done = True
        if self.backend is not None and not self.backend.is_closing():
            self.backend.write_eof()
        if self.backend_done:
            self._finish()
        elif self.reason is None:
            self.set_reason(CloseReason.CLIENT_CLOSED)
        return True  # keep the transport for the rest of the reply

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.reason is None:
            self.set_reason(CloseReason.CLIENT_ERROR, describe(exc))
        self.state = CLOSED
        self.listener.idle_sweep.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        backend = self.backend
        if backend is not None and not backend.is_closing():
            if exc is None:
                backend.close()
            else:
                backend.abort()
        self._closed()

    def pause_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and not self.backend.is_closing():
            self.backend.resume_reading()

    # -- backend events ---------------------------------------------------------------
    def from_backend(self, nbytes: int) -> None:
        """Bytes from the backend: to the client as they are."""
        if self.state >= LINGER:
            return
        self._active = True
        self.bytes_out += nbytes
        self.transport.write(bytes(_view[:nbytes]))

    def backend_finished(self) -> None:
        """The backend sent FIN: pass it on as a FIN."""
        self.backend_done = True
        if self.state >= LINGER:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.client_done:
            self._finish()

    def backend_lost(self, exc: Exception | None) -> None:
        """The backend connection is gone."""
        if self.state >= LINGER:
            return
        if exc is not None:
            self.close_early(CloseReason.BACKEND_ERROR, describe(exc))
        elif not (self.backend_done and self.client_done):
            self.close_early(CloseReason.BACKEND_CLOSED)

    # -- ending -----------------------------------------------------------------------
    def set_reason(self, reason: CloseReason, detail: str = "") -> None:
        """Record why the connection ends (the last word wins)."""
        self.reason = reason
        self.detail = detail

    def _finish(self) -> None:
        self.set_reason(CloseReason.DONE)
        self._close()

    def _close(self) -> None:
        self.state = LINGER
        self.listener.idle_sweep.discard(self)
        if self.backend is not None:
            self.backend.close()
        self.transport.close()

    def close_early(self, reason: CloseReason, detail: str = "") -> None:
        """End the connection from our side (no TLS of ours to close: a FIN, then close)."""
        if self.state >= LINGER:
            return
        self.set_reason(reason, detail)
        self._close()

    def idle_check(self) -> bool:
        """Called by the listener's sweep; four quiet checks in a row end the connection."""
        if self.state != RELAY:
            return False
        if self._active:
            self._active = False
            self._quiet = 0
            return True
        self._quiet += 1
        if self._quiet >= 4:
            self.close_early(CloseReason.IDLE_TIMEOUT)
            return False
        return True

    def _closed(self) -> None:
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
            "reason": (self.reason or CloseReason.CLOSED).text(self.detail),
        }
        if self.uid:
            fields["uid"] = self.uid.hex()
        return fields


class _Backend(asyncio.BufferedProtocol):
    """The backend side of a passed-through connection: forwards to its :class:`Passthrough`."""

    __slots__ = ("buffer_updated", "client")

    def __init__(self, client: Passthrough) -> None:
        self.client = client
        self.buffer_updated = client.from_backend  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client.attach(cast(asyncio.Transport, transport))

    get_buffer = get_shared_buffer

    def eof_received(self) -> bool:
        self.client.backend_finished()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.backend_lost(exc)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.state == RELAY:
            self.client.transport.resume_reading()
