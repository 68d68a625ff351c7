"""PROXY protocol from load balancers (``proxy_from``) on the compiled plane: the Python half.

C (``csrc/fp_proxy.c``) refuses peers outside ``proxy_from`` at accept, enforces
``proxy_timeout``, and hands the bytes a trusted balancer sent first to :meth:`ProxyIn.feed`,
which runs the Python plane's decoder (:class:`~tunnel.wire.proxy_protocol.ProxyDecoder`)
on them and says how many belong to the header; C then reads exactly those off the socket,
so OpenSSL gets the ClientHello whole. Usually the header arrives in one segment and this
is one call; a header split over segments is fed as it comes, so a malformed one is refused
as early, and with the same words, as on the Python plane (:mod:`tunnel.dataplane.proxy_in`).

The header's addresses are kept here, by connection id, and substituted for the socket's
in the compiled plane's two later calls: the log line, the per-IP limits (counted once the
header is in, as the Python plane does) and the PROXY header to the backend (with the
balancer's TLVs where ``proxy_keep_tlvs`` says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunnel.config import ListenerConfig
from tunnel.observe.reasons import CloseReason
from tunnel.wire.proxy_protocol import ProxyDecoder, ProxyHeader, ProxyProtocolError

EOF_REASON = CloseReason.PROXY_ERROR.text("client closed before the header ended")
IP_LIMITED = CloseReason.IP_LIMITED.text("")

# C's answer to a feed: None (more is needed), a close reason, or (header bytes, None or
# the reason to refuse the header's client with an RST).
Answer = tuple[int, str | None] | str | None


@dataclass(slots=True)
class Proxied:
    """What a PROXY header said about one connection (PROXY command, known family)."""

    peer: Any  # (host, port), or a Unix path (then PROXY out says UNKNOWN, as in Python)
    local: tuple[str, int] | None  # the address the client connected to (TCP families)
    tlvs: tuple[tuple[int, bytes], ...]  # the balancer's, for proxy_keep_tlvs


def proxy_in_args(cfg: ListenerConfig) -> tuple[float, list[tuple[bytes, int]], str, str]:
    """What C needs of a ``proxy_from`` listener: timeout, networks, the two reason texts."""
    nets = [(net.network_address.packed, net.prefixlen) for net in cfg.proxy_from]
    return (
        cfg.proxy_timeout,
        nets,
        CloseReason.PROXY_UNTRUSTED.text(""),
        CloseReason.PROXY_TIMEOUT.text(""),
    )


class ProxyIn:
    """The decoders of headers being read, and the headers of live connections."""

    __slots__ = ("_admit", "_decoders", "_headers")

    def __init__(self, admit: Callable[[int, int, tuple[str, int]], str | None]) -> None:
        self._admit = admit  # the per-IP rates and caps: None, or the reason to refuse
        self._decoders: dict[int, ProxyDecoder] = {}
        self._headers: dict[int, Proxied] = {}

    def feed(self, lid: int, cid: int, data: bytes, peer: tuple[str, int] | None) -> Answer:
        """Bytes peeked from the client (``b""``: it closed); see :data:`Answer`."""
        decoder = self._decoders.pop(cid, None) or ProxyDecoder()
        if not data:
            return EOF_REASON
        try:
            header = decoder.feed(data)
        except ProxyProtocolError as exc:
            return CloseReason.PROXY_ERROR.text(str(exc))
        if not isinstance(header, ProxyHeader):
            self._decoders[cid] = decoder  # every byte given is the header's: C read them
            return None
        used = len(data) - len(decoder.rest)
        if header.command == "LOCAL":
            return used, None  # a balancer's health check: its own addresses, not counted
        client: Any = peer
        if header.src_addr is not None:  # not UNKNOWN
            if header.family == "UNIX":
                client, local = header.src_addr, None
            else:
                client = (header.src_addr, header.src_port)
                local = (str(header.dst_addr), int(header.dst_port or 0))
            self._headers[cid] = Proxied(client, local, header.tlvs)
        if isinstance(client, tuple):
            return used, self._admit(lid, cid, client)  # the refusal's reason, if any
        return used, None

    def addresses(
        self, cid: int, peer: Any, local: tuple[str, int] | None
    ) -> tuple[Any, tuple[str, int] | None, tuple[tuple[int, bytes], ...]]:
        """``(peer, local, balancer TLVs)`` of a connection, the header's where it had one."""
        proxied = self._headers.get(cid)
        if proxied is None:
            return peer, local, ()
        return proxied.peer, proxied.local or local, proxied.tlvs

    def forget(self, cid: int, peer: Any) -> Any:
        """The connection ended: drop what was kept; its peer as the log line shows it."""
        self._decoders.pop(cid, None)
        proxied = self._headers.pop(cid, None)
        return peer if proxied is None else proxied.peer
