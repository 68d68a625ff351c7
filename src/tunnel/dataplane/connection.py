"""One client's life: TLS handshake, backend connect, PROXY header, relay, log.

The byte pumping itself lives in :mod:`tunnel.dataplane.relay`; this module adds what
depends on the listener's configuration: which backends to try (:mod:`.targets`; the
failover loop over their pool is :mod:`.failover`), what to send them first, and what to
count and log when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from tunnel._native.openssl import negotiated_group
from tunnel.config import Address
from tunnel.dataplane import passthrough
from tunnel.dataplane.backend_tls import TLSBackendSide
from tunnel.dataplane.failover import PoolConnect
from tunnel.dataplane.hello import ALERT_DECODE_ERROR, ALERT_HANDSHAKE_FAILURE
from tunnel.dataplane.listener import UNIQUE_ID_BYTES as UNIQUE_ID_BYTES
from tunnel.dataplane.listener import AcceptControl as AcceptControl
from tunnel.dataplane.listener import ListenerRuntime as ListenerRuntime
from tunnel.dataplane.plain_backend import PlainSide
from tunnel.dataplane.pool import Member
from tunnel.dataplane.rates import ListenerRates
from tunnel.dataplane.relay import TLSSide
from tunnel.dataplane.relay_end import CLOSED
from tunnel.dataplane.summary import client_cn, format_summary, peer_text, tcp_addr, tls_fields
from tunnel.dataplane.targets import Target
from tunnel.dataplane.tls_endpoint import describe, handshake_failure
from tunnel.observe.reasons import CloseReason, HandshakeFailure
from tunnel.tls.acme import ACME_TLS_1
from tunnel.tls.clients import client_cert
from tunnel.tls.contexts import sni_refused
from tunnel.wire import proxy_out
from tunnel.wire.clienthello import ClientHello, ClientHelloError
from tunnel.wire.ja4 import ja4
from tunnel.wire.proxy_out import ProxyOptions

log = logging.getLogger("tunnel.conn")

_SUMMARIZED = frozenset({CloseReason.RATE_LIMITED, CloseReason.IP_LIMITED})


def _proxy_header(conn: ClientConnection, options: ProxyOptions, uid: bytes | None) -> bytes:
    sslobj = conn.sslobj
    local = conn.local if conn.local is not None else conn.transport.get_extra_info("sockname")
    if options.version == "v1":
        return proxy_out.build_header(
            options, tcp_addr(conn.peer), tcp_addr(local), proxy_out.TLSFacts()
        )
    cipher = sslobj.cipher()
    facts = proxy_out.TLSFacts(
        version=sslobj.version(),
        cipher=cipher[0] if cipher else None,
        alpn=sslobj.selected_alpn_protocol(),
        sni=getattr(sslobj, "sni", None),
        ja4=conn.ja4,
        group=conn.group if conn.group != "-" else None,
    )
    return proxy_out.build_header(
        options,
        tcp_addr(conn.peer),
        tcp_addr(local),
        facts,
        cert=client_cert(sslobj, der=bool(options.cert_tlv)),
        unique_id=uid,
        balancer_tlvs=conn.balancer_tlvs,
    )


class ClientConnection(PoolConnect, TLSSide):
    """A client connection of a listener."""

    __slots__ = (
        "backend_addr",
        "balancer_tlvs",
        "connect_expired",
        "failure",
        "group",
        "handshaken",
        "ip",
        "ja4",
        "listener",
        "local",
        "member",
        "rate_key",
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
        self.member: Member | None = None  # the pool member connected to (its count)
        self.task: asyncio.Task[None] | None = None
        self.connect_expired = False
        self.failure: HandshakeFailure | None = None  # what a failed handshake counts as
        self.handshaken = False
        self.started = time.monotonic()
        self.uid: bytes | None = None  # the PROXY header's unique ID, once it was sent
        self.local: Any = None  # the address the client connected to, if not our socket's
        self.balancer_tlvs: tuple[tuple[int, bytes], ...] = ()
        self.ip: str | None = None  # the address counted by the per-IP limits, if any
        self.ja4: str | None = None  # the ClientHello's JA4 fingerprint, once read
        self.group = "-"  # the negotiated key exchange group, once the handshake is done
        self.rate_key = 0  # the shared rate bucket this connection was admitted by, if any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        # With proxy_from, the address to count is in the PROXY header (proxy_in.py): the
        # socket's peer is the balancer, whose address every client would share.
        if (listener.rates is not None or listener.per_ip is not None) and not (
            listener.config.proxy_from or self.admitted(transport.get_extra_info("peername"))
        ):
            # Refused before any TLS: no timer, no TLS object, only a counter; the RST frees
            # the socket at once instead of leaving it in TIME_WAIT/FIN_WAIT on our side.
            self.state = CLOSED
            cast(asyncio.Transport, transport).abort()
            return
        super().connection_made(transport)
        listener.live.add(self)
        listener.stats.accepted += 1
        listener.stats.active += 1
        listener.control.opened(listener.name)

    def admitted(self, peer: Any) -> bool:
        """Check ``peer`` against the shared rates, then count it in the per-IP caps."""
        return self.rate_admitted(peer) and self.ip_admitted(peer)

    def ip_admitted(self, peer: Any) -> bool:
        """Count ``peer`` in the listener's per-IP caps (False: over one; counted as refused)."""
        limits = self.listener.per_ip
        if limits is None or not (isinstance(peer, tuple) and peer):
            return True  # no cap, or not an IP peer: nothing to count
        ip = str(peer[0])
        if limits.admit(ip):
            self.ip = ip
            return True
        self.listener.stats.ip_refused += 1
        return False

    def rate_admitted(self, peer: Any) -> bool:
        """Check the listener's shared per-IP rates for ``peer`` (False: refused)."""
        rates = self.listener.rates
        key = rates.admit(peer) if rates is not None else 0
        if key is None:
            return False
        self.rate_key = key
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return  # refused by the per-IP limits: never set up
        super().connection_lost(exc)

    def on_client_hello(self, hello: ClientHello, data: memoryview | bytes) -> None:
        listener = self.listener
        fingerprint = self.ja4 = ja4(hello)
        if fingerprint in listener.deny_ja4:
            listener.stats.denied["ja4"] += 1
            self._refuse_hello(ALERT_HANDSHAKE_FAILURE, CloseReason.DENIED, f"ja4 {fingerprint}")
            return
        if listener.passthrough:
            target = listener.routes.choose(hello.server_name, None)
            if target.passthrough:
                passthrough.hand_over(self, target, hello, fingerprint, data)
                return
        self.start_tls(data)

    def hello_unreadable(self, error: ClientHelloError, data: memoryview | bytes) -> None:
        if not self.listener.strict_hello:
            self.start_tls(data)
            return
        self.failure = HandshakeFailure.BAD_CLIENT_HELLO
        detail = f"bad ClientHello: {error}"
        self._refuse_hello(ALERT_DECODE_ERROR, CloseReason.HANDSHAKE_FAILED, detail)

    def _refuse_hello(self, alert: bytes, reason: CloseReason, detail: str) -> None:
        """Close before the handshake with a fatal alert of ours (OpenSSL saw nothing)."""
        self.transport.write(alert)
        self.close_early(reason, detail)

    def handed_over(self) -> None:
        """The transport now belongs to a passthrough relay: forget the connection here."""
        self.cancel_timer()
        self.state = CLOSED
        self.listener.live.discard(self)

    def on_handshake(self) -> None:
        sslobj = self.sslobj
        cipher = sslobj.cipher()
        self.listener.stats.handshake_ok(
            time.monotonic() - self.started,
            sslobj.version() or "-",
            cipher[0] if cipher else "-",
            sslobj.selected_alpn_protocol() or "-",
        )
        group = self.group = negotiated_group(sslobj) or "-"
        self.listener.stats.groups[group] += 1
        self.handshaken = True
        if self.rate_key and sslobj.session_reused:  # only full handshakes count
            cast(ListenerRates, self.listener.rates).resumed(self.rate_key)
        if self.ip is not None:
            per_ip = self.listener.per_ip
            assert per_ip is not None
            per_ip.handshake_ended(self.ip)
        if sslobj.selected_alpn_protocol() == ACME_TLS_1:
            # A TLS-ALPN-01 validation: the handshake is all of it (RFC 8737); no backend.
            self.close_early(CloseReason.ACME_CHALLENGE)
            return
        if not self.client_left():
            self.task = self.listener.loop.create_task(self._connect())

    async def _connect(self) -> None:
        sslobj = self.sslobj
        target = self.listener.routes.choose(
            getattr(sslobj, "sni", None), sslobj.selected_alpn_protocol()
        )
        preamble = b""
        options = target.proxy
        uid = None
        if options is not None:
            if options.unique_id:
                uid = os.urandom(UNIQUE_ID_BYTES)
            preamble = _proxy_header(self, options, uid)
        await self._connect_pool(
            target, partial(self._connect_one, target, preamble=preamble, uid=uid)
        )

    def _unreachable(self, detail: str) -> None:
        self.close_early(CloseReason.BACKEND_UNREACHABLE, detail)

    async def _connect_one(
        self, target: Target, addr: Address, preamble: bytes, uid: bytes | None
    ) -> None:
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
        if uid is not None:
            self.uid = uid  # the PROXY header carrying it went out with connection_made
        if ready is not None:
            try:
                await ready
            except BaseException:
                transport.abort()
                raise

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        check = self.listener.allow_check
        refused = check.take() if check is not None else None
        if refused is None and isinstance(exc, ssl.SSLCertVerificationError):
            refused = f"client certificate: {exc.verify_message}"
        if refused is not None:  # by client_ca, crl or the allow-lists
            self.listener.stats.clients_rejected += 1
            self.failure, detail = HandshakeFailure.BAD_CLIENT_CERT, refused
        elif sni_refused(self.sslobj):
            self.failure, detail = HandshakeFailure.UNKNOWN_SNI, "unknown server name"
        else:
            self.failure, detail = handshake_failure(exc), describe(exc)
        self.close_early(CloseReason.HANDSHAKE_FAILED, detail)

    def on_closed(self) -> None:
        listener = self.listener
        listener.live.discard(self)
        reason = self.reason or CloseReason.CLOSED
        failure = self.failure if reason is CloseReason.HANDSHAKE_FAILED else None
        listener.stats.ended(reason, self.bytes_in, self.bytes_out, failure)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.member is not None:
            self.member.active -= 1
        if self.ip is not None:
            per_ip = listener.per_ip
            assert per_ip is not None
            if not self.handshaken:
                per_ip.handshake_ended(self.ip)
            per_ip.connection_ended(self.ip)
        listener.control.closed(listener.name)
        # Refusals over a per-IP rate or cap (after a balancer's PROXY header) have their
        # summary line once per second; one line each would let a flood flood the log.
        level = logging.DEBUG if reason in _SUMMARIZED else logging.INFO
        if log.isEnabledFor(level):
            fields = self.summary_fields()
            log.log(level, "%s", format_summary(fields), extra={"conn": fields})

    def summary_fields(self) -> dict[str, str | int | float]:
        """The fields of the one log line that describes this connection."""
        sslobj = self.sslobj
        fields: dict[str, str | int | float] = {
            "peer": peer_text(self.peer),
            "listener": self.listener.name,
            **tls_fields(sslobj, self.handshaken),
            "group": self.group,
            "ja4": self.ja4 or "-",
        }
        if self.listener.config.verify != "none":
            fields["client"] = client_cn(sslobj) or "-"  # only where client certs are asked
        fields["backend"] = str(self.backend_addr or "-")
        fields["in"] = self.bytes_in
        fields["out"] = self.bytes_out
        fields["duration"] = round(time.monotonic() - self.started, 3)
        fields["reason"] = self.reason_text
        if self.uid is not None:
            fields["uid"] = self.uid.hex()
        return fields
