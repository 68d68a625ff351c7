"""One client's life: TLS handshake, backend connect with failover, PROXY header, relay, log.

The byte pumping itself lives in :mod:`tunnel.dataplane.relay`; this module adds what depends on the
listener's configuration: which backends to try and for how long, what to send them
first, and what to count and log when the connection ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, cast

from tunnel.config import Address, BackendConfig, ListenerConfig
from tunnel.config.routing import RouteTable, build_route_table
from tunnel.dataplane.backend_tls import TLSBackendSide, backend_context
from tunnel.dataplane.limits import PerIPLimits
from tunnel.dataplane.relay import CLOSED, CONNECTING, PlainSide, TLSSide
from tunnel.dataplane.sweep import IdleSweep
from tunnel.observe.metrics import BackendStats, ListenerStats
from tunnel.tls.contexts import client_cert, take_rejection
from tunnel.wire import proxy_out
from tunnel.wire.proxy_out import ProxyOptions

log = logging.getLogger("tunnel.conn")

UNIQUE_ID_BYTES = 16  # the spec allows up to 128; 16 random bytes never collide in practice


class AcceptControl(Protocol):
    """What a connection tells its worker (which pauses accepting at the limit)."""

    def opened(self, listener: str) -> None: ...

    def closed(self, listener: str) -> None: ...


class ListenerRuntime:
    """Per-worker state of one listener: its TLS context, backends, live connections."""

    def __init__(
        self,
        config: ListenerConfig,
        ctx: ssl.SSLContext,
        loop: asyncio.AbstractEventLoop,
        control: AcceptControl,
        backends: Mapping[str, BackendConfig] | None = None,
        counters: dict[str, BackendStats] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        self.loop = loop
        self.control = control
        self.stats = ListenerStats()
        # Shared by all listeners of a worker: keyed by backend address.
        self.counters = counters if counters is not None else {}
        self.live: set[ClientConnection] = set()
        # One timer checks every relaying connection for idleness (no timer per connection).
        self.idle_sweep = IdleSweep(loop, config.idle_timeout / 4)
        # Listeners that read an inbound PROXY header use a subclass (tunnel.proxy_in),
        # so the others pay nothing for it.
        self.conn_class: type[ClientConnection] = ClientConnection
        self.routes = listener_routes(config, backends or {})
        limits = PerIPLimits(
            config.name, config.max_connections_per_ip, config.max_handshakes_per_ip, loop
        )
        # None when no per-IP limit is set: then a connection does not even look it up.
        self.per_ip: PerIPLimits | None = limits if limits.enabled else None

    def backend_stats(self, addr: Address) -> BackendStats:
        """The statistics of one backend address (created on first use)."""
        key = str(addr)
        stats = self.counters.get(key)
        if stats is None:
            stats = self.counters[key] = BackendStats()
        return stats

    def protocol_factory(self) -> ClientConnection:
        """Create the protocol for one accepted client connection."""
        return self.conn_class(self)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a connection goes: a backend's addresses, and the PROXY header it gets."""

    backend: BackendConfig
    proxy: ProxyOptions | None
    tls: ssl.SSLContext | None = None  # the backend is reached over TLS with this context


def listener_routes(
    config: ListenerConfig, backends: Mapping[str, BackendConfig]
) -> RouteTable[Target]:
    """The listener's route table; its own ``connect`` (or ``backend``) is the fallback.

    A ``[backend:NAME]`` decides whether (and which version of) a PROXY header it gets;
    the other PROXY options (CRC32C, unique ID, ...) are the listener's.
    """
    targets = {
        name: Target(backend, proxy_options(config, backend.proxy_protocol), backend_context(name))
        for name, backend in backends.items()
    }
    if config.backend is not None:
        default = targets[config.backend]
    else:
        own = BackendConfig(
            config.name, config.connect, config.connect_timeout, config.proxy_protocol
        )
        default = Target(own, proxy_options(config, config.proxy_protocol))
    return build_route_table(config.routes, targets, default)


def _proxy_header(conn: ClientConnection, options: ProxyOptions) -> bytes:
    sslobj = conn.sslobj
    local = conn.local if conn.local is not None else conn.transport.get_extra_info("sockname")
    if options.version == "v1":
        return proxy_out.build_header(
            options, _tcp_addr(conn.peer), _tcp_addr(local), proxy_out.TLSFacts()
        )
    cipher = sslobj.cipher()
    facts = proxy_out.TLSFacts(
        version=sslobj.version(),
        cipher=cipher[0] if cipher else None,
        alpn=sslobj.selected_alpn_protocol(),
        sni=getattr(sslobj, "sni", None),
    )
    return proxy_out.build_header(
        options,
        _tcp_addr(conn.peer),
        _tcp_addr(local),
        facts,
        cert=client_cert(sslobj, der=bool(options.cert_tlv)),
        unique_id=conn.uid,
        balancer_tlvs=conn.balancer_tlvs,
    )


def proxy_options(cfg: ListenerConfig, version: str) -> ProxyOptions | None:
    """The listener's PROXY-out settings for ``version``, or None when it is off."""
    if version == "off":
        return None
    return ProxyOptions(
        version=version,
        crc32c=cfg.proxy_crc32c,
        unique_id=cfg.proxy_unique_id,
        cert_tlv=cfg.proxy_cert_tlv,
        keep_tlvs=cfg.proxy_keep_tlvs,
    )


def client_cn(sslobj: ssl.SSLObject) -> str | None:
    """The verified client certificate's subject CN, if there is one."""
    try:
        cert = sslobj.getpeercert()
    except ValueError:  # handshake not done
        return None
    subject: Any = (cert or {}).get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _tcp_addr(addr: Any) -> tuple[str, int] | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return None


class ClientConnection(TLSSide):
    """A client connection of a listener."""

    __slots__ = (
        "backend_addr",
        "balancer_tlvs",
        "connect_expired",
        "handshaken",
        "ip",
        "listener",
        "local",
        "started",
        "task",
        "uid",
    )

    def __init__(self, listener: ListenerRuntime) -> None:
        cfg = listener.config
        super().__init__(
            listener.loop,
            listener.ctx,
            cfg.handshake_timeout,
            cfg.buffer_size,
            listener.idle_sweep,
        )
        self.listener = listener
        self.backend_addr: Address | None = None
        self.task: asyncio.Task[None] | None = None
        self.connect_expired = False
        self.handshaken = False
        self.started = time.monotonic()
        self.uid: bytes | None = None
        self.local: Any = None  # the address the client connected to, if not our socket's
        self.balancer_tlvs: tuple[tuple[int, bytes], ...] = ()
        self.ip: str | None = None  # the address counted by the per-IP limits, if any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        if listener.per_ip is not None and not self._admit(listener.per_ip, transport):
            return
        super().connection_made(transport)
        listener.live.add(self)
        listener.stats.accepted += 1
        listener.stats.active += 1
        listener.control.opened(listener.name)

    def _admit(self, limits: PerIPLimits, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        if not (isinstance(peer, tuple) and peer):
            return True  # not an IP peer: nothing to count
        ip = str(peer[0])
        if limits.admit(ip):
            self.ip = ip
            return True
        # Refused before any TLS: no timer, no TLS object, only a counter; the RST frees
        # the socket at once instead of leaving it in TIME_WAIT/FIN_WAIT on our side.
        self.listener.stats.ip_refused += 1
        self.state = CLOSED
        cast(asyncio.Transport, transport).abort()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return  # refused by the per-IP limits: never set up
        super().connection_lost(exc)

    def on_handshake(self) -> None:
        sslobj = self.sslobj
        cipher = sslobj.cipher()
        self.listener.stats.handshake_ok(
            time.monotonic() - self.started,
            sslobj.version() or "-",
            cipher[0] if cipher else "-",
            sslobj.selected_alpn_protocol() or "-",
        )
        self.handshaken = True
        if self.ip is not None:
            per_ip = self.listener.per_ip
            assert per_ip is not None
            per_ip.handshake_ended(self.ip)
        self.task = self.listener.loop.create_task(self._connect())

    async def _connect(self) -> None:
        sslobj = self.sslobj
        target = self.listener.routes.choose(
            getattr(sslobj, "sni", None), sslobj.selected_alpn_protocol()
        )
        cfg = target.backend
        preamble = b""
        options = target.proxy
        if options is not None:
            if options.unique_id:
                self.uid = os.urandom(UNIQUE_ID_BYTES)
            preamble = _proxy_header(self, options)
        failures = []
        loop = self.listener.loop
        for addr in cfg.connect:
            self.backend_addr = addr
            stats = self.listener.backend_stats(addr)
            begun = time.monotonic()
            # A plain timer rather than asyncio.timeout(): same effect, a fraction of
            # the cost (no current_task/get_running_loop lookups) on every connection.
            self.connect_expired = False
            timer = loop.call_later(cfg.connect_timeout, self._connect_timed_out)
            try:
                await self._connect_one(target, addr, preamble)
                stats.connected(time.monotonic() - begun)
                self.task = None  # done: a finished Task kept for the connection's life is ~0.7 KiB
                return
            except asyncio.CancelledError:
                task = self.task
                if not self.connect_expired or task is None or task.uncancel():
                    raise  # cancelled from outside (the client left, or shutdown)
                failures.append(f"{addr}: connect timed out")
                stats.failed("timeout")
            except ssl.SSLError as exc:
                why = getattr(exc, "verify_message", None) or exc.reason or exc
                failures.append(f"{addr}: TLS handshake failed: {why}")
                stats.failed("tls")
            except OSError as exc:
                failures.append(f"{addr}: {exc.strerror or exc}")
                stats.failed(_failure_kind(exc))
            finally:
                timer.cancel()
            if self.state != CONNECTING:
                return  # the client went away meanwhile
        self.close_early("backend unreachable: " + "; ".join(failures))

    def _connect_timed_out(self) -> None:
        self.connect_expired = True
        if self.task is not None:
            self.task.cancel()

    async def _connect_one(self, target: Target, addr: Address, preamble: bytes) -> None:
        """Connect to one address (and complete the TLS handshake with a TLS backend)."""
        loop = self.listener.loop
        ready: asyncio.Future[None] | None = None
        factory: Callable[[], asyncio.BaseProtocol]
        if target.tls is None:
            factory = partial(PlainSide, self, preamble)
        else:
            ready = loop.create_future()
            host = target.backend.sni or (addr.host if addr.kind == "tcp" else None)
            factory = partial(TLSBackendSide, self, target.tls, host, preamble, ready)
        if addr.kind == "unix":
            transport, _ = await loop.create_unix_connection(factory, addr.path)
        else:
            transport, _ = await loop.create_connection(factory, addr.host, addr.port)
        if ready is not None:
            try:
                await ready
            except BaseException:
                transport.abort()
                raise

    def handshake_failed(self, exc: ssl.SSLError) -> str:
        reason = take_rejection()
        if reason is None and isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"client certificate: {exc.verify_message}"
        if reason is None:
            return super().handshake_failed(exc)
        self.listener.stats.clients_rejected += 1
        return f"handshake failed: {reason}"

    def on_closed(self) -> None:
        listener = self.listener
        listener.live.discard(self)
        reason = self.reason or "closed"
        listener.stats.ended(reason, self.bytes_in, self.bytes_out)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.ip is not None:
            per_ip = listener.per_ip
            assert per_ip is not None
            if not self.handshaken:
                per_ip.handshake_ended(self.ip)
            per_ip.connection_ended(self.ip)
        listener.control.closed(listener.name)
        if log.isEnabledFor(logging.INFO):
            fields = self.summary_fields()
            log.info("%s", format_summary(fields), extra={"conn": fields})

    def summary_fields(self) -> dict[str, str | int | float]:
        """The fields of the one log line that describes this connection."""
        sslobj = self.sslobj
        cipher = sslobj.cipher()
        peer = _tcp_addr(self.peer)
        peer_text = (
            f"[{peer[0]}]:{peer[1]}"
            if peer and ":" in peer[0]
            else (f"{peer[0]}:{peer[1]}" if peer else "-")
        )
        fields: dict[str, str | int | float] = {
            "peer": peer_text,
            "listener": self.listener.name,
            "sni": getattr(sslobj, "sni", None) or "-",
            "alpn": sslobj.selected_alpn_protocol() or "-",
            "tls": sslobj.version() or "-",
            "cipher": cipher[0] if cipher else "-",
            "resumed": "yes" if sslobj.session_reused else "no",
        }
        if self.listener.config.verify != "none":
            fields["client"] = client_cn(sslobj) or "-"  # only where client certs are asked
        fields["backend"] = str(self.backend_addr or "-")
        fields["in"] = self.bytes_in
        fields["out"] = self.bytes_out
        fields["duration"] = round(time.monotonic() - self.started, 3)
        fields["reason"] = self.reason or "closed"
        if self.uid:
            fields["uid"] = self.uid.hex()
        return fields

    def summary(self) -> str:
        """The one log line that describes this connection."""
        return format_summary(self.summary_fields())


def format_summary(fields: dict[str, str | int | float]) -> str:
    """The text form of a connection summary: ``conn peer=... reason="..."``."""
    parts = ["conn"]
    for key, value in fields.items():
        if key == "duration":
            parts.append(f"duration={value:.3f}s")
        elif key == "reason":
            parts.append(f'reason="{value}"')
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _failure_kind(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return "error"
