"""PROXY protocol from a load balancer: the inbound header, read before the TLS handshake.

A listener with ``proxy_from`` uses :class:`ProxiedConnection` instead of
:class:`~tunnel.dataplane.connection.ClientConnection`; listeners without it never run this code.
The connection starts in a "PROXY" phase, before the TLS handshake:

* a source outside the trusted networks is closed at once (logged, counted);
* received bytes go to a :class:`~tunnel.wire.proxy_protocol.ProxyDecoder`, whose buffer is
  capped, until the header is complete; bytes after it (``rest``, typically the start of
  the ClientHello) go to the TLS layer, so nothing is lost however the bytes are split;
* the header must be complete within ``proxy_timeout``; the handshake timeout starts after;
* a malformed, oversized or truncated header closes the connection with a log line that
  names the peer, and a "closed by reason" count; never an exception out of the protocol.

The header's source address then replaces the socket's peer for the logs, the metrics, the
per-IP rates and caps, and the PROXY header to the backend (a LOCAL header, e.g. a
balancer's health check, keeps the socket's own addresses and is not counted).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from tunnel.config import IPNetwork
from tunnel.dataplane.connection import ClientConnection, ListenerRuntime
from tunnel.dataplane.relay_end import LINGER
from tunnel.observe.reasons import CloseReason
from tunnel.wire.proxy_protocol import ProxyDecoder, ProxyHeader, ProxyProtocolError

log = logging.getLogger("tunnel.conn")


def trusted(peer: Any, networks: tuple[IPNetwork, ...]) -> bool:
    """True if ``peer`` (a socket address) is inside one of ``networks``."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class ProxiedConnection(ClientConnection):
    """A client connection that must start with a PROXY v1/v2 header."""

    __slots__ = ("_decoder",)

    def __init__(self, listener: ListenerRuntime) -> None:
        super().__init__(listener)
        self._decoder: ProxyDecoder | None = ProxyDecoder()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        cfg = self.listener.config
        self._timer.cancel()  # the handshake deadline starts once the header is in
        if not trusted(self.peer, cfg.proxy_from):
            self._refuse(CloseReason.PROXY_UNTRUSTED, abort=False)
            return
        self._timer = self._loop.call_later(cfg.proxy_timeout, self._proxy_expired)

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self._decoder
        if decoder is None:
            super().buffer_updated(nbytes)
            return
        try:
            header = decoder.feed(bytes(self.get_buffer(nbytes)[:nbytes]))
        except ProxyProtocolError as exc:
            self._refuse(CloseReason.PROXY_ERROR, str(exc), abort=False)
            return
        if not isinstance(header, ProxyHeader):
            return
        self._decoder = None
        self._apply(header)
        if header.command != "LOCAL" and not self._admitted_by_header():
            return
        self._timer.cancel()
        self._timer = self._loop.call_later(self._hs_timeout, self._handshake_expired)
        if decoder.rest:
            self.first_bytes(decoder.rest)

    def eof_received(self) -> bool:
        if self._decoder is None:
            return super().eof_received()
        self._refuse(CloseReason.PROXY_ERROR, "client closed before the header ended", abort=False)
        return False

    def _admitted_by_header(self) -> bool:
        """The rates and per-IP caps count the header's client, not the balancer; a refused
        connection is closed before any TLS."""
        if not self.rate_admitted(self.peer):
            self._refuse(CloseReason.RATE_LIMITED, abort=True)
            return False
        if not self.ip_admitted(self.peer):
            self._refuse(CloseReason.IP_LIMITED, abort=True)
            return False
        return True

    def _apply(self, header: ProxyHeader) -> None:
        if header.command == "LOCAL" or header.src_addr is None:
            return  # a health check, or UNKNOWN: keep the socket's own addresses
        if header.family == "UNIX":
            self.peer = header.src_addr  # not TCP: PROXY out says UNKNOWN
        else:
            self.peer = (header.src_addr, header.src_port)
            self.local = (header.dst_addr, header.dst_port)
        self.balancer_tlvs = header.tlvs

    def _proxy_expired(self) -> None:
        self._refuse(CloseReason.PROXY_TIMEOUT, abort=True)

    def _refuse(self, reason: CloseReason, detail: str = "", *, abort: bool) -> None:
        self._decoder = None
        self.set_reason(reason, detail)
        self.state = LINGER
        self._timer.cancel()
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
