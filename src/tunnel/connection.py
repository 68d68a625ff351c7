"""One client's life: TLS handshake, backend connect with failover, PROXY header, relay, log.

The byte pumping itself lives in :mod:`tunnel.relay`; this module adds what depends on the
listener's configuration: which backends to try and for how long, what to send them
first, and what to count and log when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tunnel import proxy_out
from tunnel.config import Address, BackendConfig, ListenerConfig
from tunnel.proxy_out import ProxyOptions
from tunnel.relay import CONNECTING, PlainSide, TLSSide
from tunnel.routing import RouteTable, build_route_table
from tunnel.tls import client_cert, take_rejection

log = logging.getLogger("tunnel.conn")

UNIQUE_ID_BYTES = 16  # the spec allows up to 128; 16 random bytes never collide in practice


class AcceptControl(Protocol):
    """What a connection tells its worker (which pauses accepting at the limit)."""

    def opened(self) -> None: ...

    def closed(self) -> None: ...


@dataclass(slots=True)
class ListenerStats:
    """Counters of one listener in one worker."""

    accepted: int = 0
    active: int = 0
    handshakes_ok: int = 0
    handshakes_failed: int = 0
    backend_failures: int = 0
    clients_rejected: int = 0  # client certificates refused (CA, CRL or allow-lists)
    bytes_in: int = 0
    bytes_out: int = 0
    closed: Counter[str] = field(default_factory=Counter)


class ListenerRuntime:
    """Per-worker state of one listener: its TLS context, backends, live connections."""

    def __init__(
        self,
        config: ListenerConfig,
        ctx: ssl.SSLContext,
        loop: asyncio.AbstractEventLoop,
        control: AcceptControl,
        backends: Mapping[str, BackendConfig] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        self.loop = loop
        self.control = control
        self.stats = ListenerStats()
        self.live: set[ClientConnection] = set()
        # Listeners that read an inbound PROXY header use a subclass (tunnel.proxy_in),
        # so the others pay nothing for it.
        self.conn_class: type[ClientConnection] = ClientConnection
        self.routes = listener_routes(config, backends or {})

    def protocol_factory(self) -> ClientConnection:
        """Create the protocol for one accepted client connection."""
        return self.conn_class(self)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a connection goes: a backend's addresses, and the PROXY header it gets."""

    backend: BackendConfig
    proxy: ProxyOptions | None


def listener_routes(
    config: ListenerConfig, backends: Mapping[str, BackendConfig]
) -> RouteTable[Target]:
    """The listener's route table; its own ``connect`` (or ``backend``) is the fallback.

    A ``[backend:NAME]`` decides whether (and which version of) a PROXY header it gets;
    the other PROXY options (CRC32C, unique ID, ...) are the listener's.
    """
    targets = {
        name: Target(backend, proxy_options(config, backend.proxy_protocol))
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

    __slots__ = ("backend_addr", "balancer_tlvs", "listener", "local", "started", "task", "uid")

    def __init__(self, listener: ListenerRuntime) -> None:
        cfg = listener.config
        super().__init__(
            listener.loop, listener.ctx, cfg.handshake_timeout, cfg.idle_timeout, cfg.buffer_size
        )
        self.listener = listener
        self.backend_addr: Address | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.uid: bytes | None = None
        self.local: Any = None  # the address the client connected to, if not our socket's
        self.balancer_tlvs: tuple[tuple[int, bytes], ...] = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        listener = self.listener
        listener.live.add(self)
        listener.stats.accepted += 1
        listener.stats.active += 1
        listener.control.opened()

    def on_handshake(self) -> None:
        self.listener.stats.handshakes_ok += 1
        self.task = self.listener.loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = self.listener.loop
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
        for addr in cfg.connect:
            self.backend_addr = addr
            try:
                async with asyncio.timeout(cfg.connect_timeout):
                    if addr.kind == "unix":
                        await loop.create_unix_connection(
                            lambda: PlainSide(self, preamble), addr.path
                        )
                    else:
                        await loop.create_connection(
                            lambda: PlainSide(self, preamble), addr.host, addr.port
                        )
                return
            except TimeoutError:
                failures.append(f"{addr}: connect timed out")
            except OSError as exc:
                failures.append(f"{addr}: {exc.strerror or exc}")
            self.listener.stats.backend_failures += 1
            if self.state != CONNECTING:
                return  # the client went away meanwhile
        self.close_early("backend unreachable: " + "; ".join(failures))

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
        stats = listener.stats
        stats.active -= 1
        stats.bytes_in += self.bytes_in
        stats.bytes_out += self.bytes_out
        reason = self.reason or "closed"
        stats.closed[reason.split(":", 1)[0]] += 1
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if reason.startswith(("handshake", "client closed during")):
            stats.handshakes_failed += 1
        listener.control.closed()
        if log.isEnabledFor(logging.INFO):
            log.info("%s", self.summary())

    def _client_field(self) -> str:
        """`` client=CN`` on listeners that ask for client certificates, else nothing."""
        if self.listener.config.verify == "none":
            return ""
        return f" client={client_cn(self.sslobj) or '-'}"

    def summary(self) -> str:
        """The one log line that describes this connection."""
        sslobj = self.sslobj
        cipher = sslobj.cipher()
        peer = _tcp_addr(self.peer)
        peer_text = (
            f"[{peer[0]}]:{peer[1]}"
            if peer and ":" in peer[0]
            else (f"{peer[0]}:{peer[1]}" if peer else "-")
        )
        return (
            f"conn peer={peer_text} listener={self.listener.name}"
            f" sni={getattr(sslobj, 'sni', None) or '-'}"
            f" alpn={sslobj.selected_alpn_protocol() or '-'}"
            f" tls={sslobj.version() or '-'} cipher={cipher[0] if cipher else '-'}"
            f" resumed={'yes' if sslobj.session_reused else 'no'}"
            f"{self._client_field()}"
            f" backend={self.backend_addr or '-'} in={self.bytes_in} out={self.bytes_out}"
            f' duration={time.monotonic() - self.started:.3f}s reason="{self.reason or "closed"}"'
            + (f" uid={self.uid.hex()}" if self.uid else "")
        )
