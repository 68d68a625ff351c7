"""Per-connection bookkeeping of the compiled plane's Python side (no I/O but one log line).

What Python remembers of a connection between its two calls (:class:`Pending`), the
socket addresses handed to C, and what the connect attempts C reports mean for the
backend statistics, the pool's passive health and the close reason.

C reports a failed attempt at once, and a success with Python's next call (before the
next connection picks its addresses), or at once when :func:`recovering` asked for it;
each report holds every attempt so far, and only those not counted yet are counted. A
failed handshake with a TLS backend is logged as the Python plane logs it (a WARNING:
failover would hide it otherwise).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunnel._native.openssl import group_display_name
from tunnel.config import Address
from tunnel.dataplane.fastplane_tls import log_failure
from tunnel.dataplane.listener import ListenerRuntime
from tunnel.dataplane.plane import numeric
from tunnel.dataplane.pool import Member
from tunnel.dataplane.summary import peer_text
from tunnel.dataplane.targets import Target
from tunnel.dataplane.tls_endpoint import failure_by_code
from tunnel.observe.reasons import CloseReason, HandshakeFailure
from tunnel.wire.ja4 import message_ja4
from tunnel.wire.proxy_out import ClientCert


def _hello_ja4() -> Callable[[bytes | None], str | None]:
    """The extension's ``ja4`` (the same answer as :func:`message_ja4`, in C: ~1 µs
    instead of ~14 µs of Python per ClientHello), or that function if not built."""
    try:
        from tunnel.dataplane import _fastplane  # type: ignore[attr-defined]
    except ImportError:
        return message_ja4
    function: Callable[[bytes | None], str | None] = _fastplane.ja4
    return function


hello_ja4 = _hello_ja4()

# SNI, ALPN, TLS version, cipher, resumed, key exchange group (OpenSSL's name)
Facts = tuple[str | None, str | None, str | None, str | None, bool, str | None]
SockAddr = tuple[int, str, int]
# The configured addresses tried, and their socket addresses (None: names to resolve first).
Addresses = tuple[tuple[Address, ...], tuple[SockAddr, ...] | None]
# A connect attempt from C: (address index, result, seconds[, text]). Result: 0 connected,
# an errno, TIMED_OUT, or (with the text) TLS_FAILED / CLOSED_IN_HANDSHAKE of a TLS backend.
Attempt = tuple[Any, ...]
TIMED_OUT, TLS_FAILED, CLOSED_IN_HANDSHAKE = -1, -2, -3

UNKNOWN_NAME = "unknown server name"  # the detail C gives when sni_strict refused the name


@dataclass(slots=True)
class Pending:
    """What Python remembers of a connection between its handshake and its close."""

    target: Target
    uid: bytes | None
    origins: tuple[Address, ...]  # the configured address behind each address tried
    members: tuple[Member, ...] = ()  # the pool member behind each address tried
    member: Member | None = None  # the one connected to (its active count)
    counted: int = 0  # how many of its connect attempts went into the statistics and pool
    spent: float = 0.0  # seconds on the current member's addresses so far (a name's)
    failures: list[str] = field(default_factory=list)  # names unresolved, members failed
    client: str | None = None  # the client certificate's subject CN (mTLS listeners)
    task: asyncio.Task[None] | None = None  # resolving backend host names
    ja4: str | None = None  # the JA4 of the ClientHello, once computed (entry_ja4)
    hello: bytes | None = None  # that ClientHello (C hands over the message) until then
    passthrough: bool = False  # passed through untouched (fastplane_passthrough.py)
    sni: str | None = None  # the SNI of a passed-through connection's ClientHello


def entry_ja4(entry: Pending) -> str | None:
    """The JA4 of ``entry``'s ClientHello, computed at the first use only: most connections
    need none (no PROXY TLV carries it, and the log line is off at level WARNING)."""
    hello = entry.hello
    if hello is not None:
        entry.ja4, entry.hello = hello_ja4(hello), None
    return entry.ja4


class AddressCache:
    """The configured address behind each member a connection tries (``origins``) and the
    socket addresses C gets for them (None if a host name is among them: resolved first),
    by the members tried. Most connections try the same members (one, often): this spares
    each of them the tuples and the parse of every address (``inet_pton``).

    Members are compared by identity and their address never changes (a pool's refresh
    makes new members); the cache is emptied at ``limit`` entries (pools that change)."""

    __slots__ = ("_known", "_limit")

    def __init__(self, limit: int = 256) -> None:
        self._known: dict[tuple[Member, ...], Addresses] = {}
        self._limit = limit

    def get(self, members: tuple[Member, ...]) -> Addresses:
        """``(origins, socket addresses or None)`` of ``members``."""
        known = self._known.get(members)
        if known is None:
            if len(self._known) >= self._limit:
                self._known.clear()
            origins = tuple(member.address for member in members)
            addrs = tuple(map(sockaddr, origins)) if all(map(numeric, origins)) else None
            known = self._known[members] = (origins, addrs)
        return known


def sockaddr(addr: Address) -> tuple[int, str, int]:
    if addr.kind == "unix":
        return (socket.AF_UNIX, addr.path, 0)
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    return (int(family), addr.host, addr.port)


def _failure_kind(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return "error"


def count_attempts(runtime: ListenerRuntime, entry: Pending, attempts: list[Attempt]) -> None:
    """Backend statistics, the pool's passive health and ``entry.failures`` from the
    connect attempts not counted yet. The addresses of one host name are one attempt, as
    on the Python plane (which connects to the name): it fails once the last one failed."""
    pool = entry.target.pool
    members = entry.members
    now = time.monotonic()
    for index, result, seconds, *text in attempts[entry.counted :]:
        entry.counted += 1
        addr = entry.origins[index]
        member = members[index]
        entry.spent += seconds
        if result == 0:
            runtime.backend_stats(addr).connected(entry.spent)
            pool.succeeded(member)
            member.active += 1
            entry.member = member
        elif result < TIMED_OUT:  # the TLS handshake failed, or the backend closed during it
            runtime.backend_stats(addr).failed("tls" if result == TLS_FAILED else "error")
            entry.failures.append(f"{addr}: {text[0]}")
            if result == TLS_FAILED:
                why = str(text[0]).removeprefix("TLS handshake failed: ")
                log_failure(runtime.name, addr, why, index + 1 >= len(members))
        elif index + 1 < len(members) and members[index + 1] is member:
            continue  # the name's next address is tried next: the name has not failed yet
        elif result < 0:
            runtime.backend_stats(addr).failed("timeout")
            entry.failures.append(f"{addr}: connect timed out")
        else:
            runtime.backend_stats(addr).failed(_failure_kind(result))
            entry.failures.append(f"{addr}: {os.strerror(result)}")
        if result != 0:
            pool.failed(member, now, entry.failures[-1])
        entry.spent = 0.0


def recovering(members: tuple[Member, ...]) -> bool:
    """Whether a connect to one of ``members`` changes the pool at once (failures in a row
    to forget, a back-off to end and log): then C reports a success at once, too."""
    return any(member.fails or member.down_until for member in members)


def certificate_facts(der: bytes, resumed: bool) -> tuple[str | None, ClientCert] | None:
    """The subject CN (first, as the log line shows it) and the PROXY v2 facts of a client
    certificate that OpenSSL verified; None if ``cryptography`` cannot parse it."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        names = [
            str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        ]
        sig_alg = cert.signature_algorithm_oid._name
        key_alg = cert.public_key_algorithm_oid._name
    except ValueError:
        return None
    facts = ClientCert(
        cn=names[-1] if names else None,
        sig_alg=sig_alg,
        key_alg=key_alg,
        verify=0,  # OpenSSL fails the handshake on a certificate that does not verify
        this_connection=not resumed,
        der=None,
    )
    return (names[0] if names else None), facts


_REASONS = {reason.value: reason for reason in CloseReason}


def close_labels(
    text: str, rejected: bool, bad_hello: bool = False
) -> tuple[CloseReason, HandshakeFailure | None]:
    """The metric labels of a close reason text from C (``handshake failed: ...``);
    ``rejected``: the client certificate was refused (on_rejected said so); ``bad_hello``:
    deny_ja4's reader refused the ClientHello (fastplane_policy)."""
    head, _, detail = text.partition(": ")
    # A dict, not CloseReason(head): the Enum call costs more than the rest of this.
    # Other texts ("internal error (see the traceback)") count as closed.
    reason = _REASONS.get(head, CloseReason.CLOSED)
    if reason is not CloseReason.HANDSHAKE_FAILED:
        return reason, None
    if rejected:
        return reason, HandshakeFailure.BAD_CLIENT_CERT
    if bad_hello:
        return reason, HandshakeFailure.BAD_CLIENT_HELLO
    if detail == UNKNOWN_NAME:
        return reason, HandshakeFailure.UNKNOWN_SNI
    return reason, failure_by_code(detail.upper().replace(" ", "_"))


def tls_fields(
    runtime: ListenerRuntime,
    peer: Any,
    facts: Facts,
    fingerprint: str | None,
    client: str | None,
    backend: Address | None,
) -> dict[str, str | int | float]:
    """The head of a terminated connection's log line (the caller adds the rest)."""
    sni, alpn, version, cipher, resumed, group = facts
    fields: dict[str, str | int | float] = {
        "peer": peer_text(peer),
        "listener": runtime.name,
        "sni": sni or "-",
        "alpn": alpn or "-",
        "tls": version or "-",
        "cipher": cipher or "-",
        "resumed": "yes" if resumed else "no",
        "group": group_display_name(group) if group else "-",
        "ja4": fingerprint or "-",
    }
    if runtime.config.verify != "none":
        fields["client"] = client or "-"  # only where client certificates are asked
    fields["backend"] = str(backend or "-")
    return fields
