"""Per-connection bookkeeping of the compiled plane's Python side (no I/O).

What Python remembers of a connection between its two calls (:class:`Pending`), the
socket addresses handed to C, and what the connect attempts C reports mean for the
backend statistics, the pool's passive health and the close reason.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from dataclasses import dataclass, field

from tunnel.config import Address
from tunnel.dataplane.connection import ListenerRuntime
from tunnel.dataplane.pool import Member
from tunnel.dataplane.targets import Target
from tunnel.wire.proxy_out import ClientCert

# SNI, ALPN, TLS version, cipher, resumed, key exchange group (OpenSSL's name)
Facts = tuple[str | None, str | None, str | None, str | None, bool, str | None]
SockAddr = tuple[int, str, int]


@dataclass(slots=True)
class Pending:
    """What Python remembers of a connection between its handshake and its close."""

    target: Target
    uid: bytes | None
    origins: tuple[Address, ...]  # the configured address behind each address tried
    members: tuple[Member, ...] = ()  # the pool member behind each address tried
    member: Member | None = None  # the one connected to (its active count)
    counted: bool = False  # its connect attempts went into the statistics and the pool
    failures: list[str] = field(default_factory=list)  # names that did not resolve
    client: str | None = None  # the client certificate's subject CN (mTLS listeners)
    task: asyncio.Task[None] | None = None  # resolving backend host names
    ja4: str | None = None  # the JA4 of the client's ClientHello (C hands over the message)


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


def count_attempts(
    runtime: ListenerRuntime, entry: Pending, attempts: list[tuple[int, int, float]]
) -> list[str]:
    """Backend statistics and the pool's passive health from the connect attempts (seen
    at the next close or statistics report, not at once); the failures, for a reason."""
    failures = []
    pool = entry.target.pool
    now = time.monotonic()
    for index, result, seconds in attempts:
        addr = entry.origins[index]
        member = entry.members[index]
        stats = runtime.backend_stats(addr)
        if result == 0:
            stats.connected(seconds)
            pool.succeeded(member)
            member.active += 1
            entry.member = member
            continue
        if result < 0:
            stats.failed("timeout")
            failures.append(f"{addr}: connect timed out")
        else:
            stats.failed(_failure_kind(result))
            failures.append(f"{addr}: {os.strerror(result)}")
        pool.failed(member, now, failures[-1])
    return failures


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


def failure_texts(entry: Pending, attempts: list[tuple[int, int, float]]) -> list[str]:
    """The failed attempts as a close reason names them (already counted)."""
    return [
        f"{entry.origins[i]}: " + ("connect timed out" if r < 0 else os.strerror(r))
        for i, r, _ in attempts
        if r != 0
    ]
