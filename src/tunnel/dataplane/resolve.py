"""DNS for backend pools: names re-resolved when their TTL expires, SRV records read.

A worker resolves its pools' names once before it accepts, then again whenever the
shortest TTL of a pool's answers has passed (never per connection). Until a name has an
answer (no DNS server, NXDOMAIN, a name only /etc/hosts knows, ``localhost``), the name
itself is the member and each connect resolves it with ``getaddrinfo``, as before pools;
a failed re-resolution keeps the previous answer and retries after :data:`RETRY_SECONDS`.
``srv:NAME`` members are the targets of NAME's SRV records with their priority, weight
and port; they have no fallback (an SRV name that never resolved is an empty pool).
The DNS servers are ``[tunnel] resolvers`` or else those of /etc/resolv.conf.
dnspython (dozens of modules) is imported on the first name to resolve, so that instances
whose backends are all addresses (or localhost) do not carry it.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tunnel.config import Address
from tunnel.dataplane.pool import Member

if TYPE_CHECKING:
    import dns.asyncresolver

log = logging.getLogger("tunnel.pool")

LIFETIME_SECONDS = 2.0  # one lookup, all servers and retries
RETRY_SECONDS = 5.0  # after a failed lookup
MIN_TTL = 1.0  # a TTL of 0 must not become a query loop
MAX_TTL = 3600.0
STATIC = float("inf")  # "never re-resolve"


def is_static(address: Address) -> bool:
    """True for addresses DNS has nothing to say about: literals, unix:, localhost."""
    if address.kind == "unix":
        return True
    if address.kind == "srv":
        return False
    if address.host == "localhost" or address.host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        return False
    return True


class Resolver:
    """Looks up A/AAAA and SRV records; ``None`` answers mean "no answer, fall back"."""

    def __init__(self, servers: tuple[Address, ...]) -> None:
        self._servers = servers
        self._made = False
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _dns(self) -> dns.asyncresolver.Resolver | None:
        """The dnspython resolver, made (and dnspython imported) on first use."""
        if self._made:
            return self._resolver
        self._made = True
        import dns.asyncresolver
        import dns.resolver

        try:
            resolver = dns.asyncresolver.Resolver(configure=not self._servers)
        except dns.resolver.NoResolverConfiguration:
            return None  # no resolv.conf: names stay getaddrinfo's
        if self._servers:
            _set_servers(resolver, [(a.host, a.port) for a in self._servers])
        resolver.lifetime = LIFETIME_SECONDS
        resolver.cache = None  # the TTL bookkeeping is ours
        self._resolver = resolver
        return resolver

    async def host(self, name: str) -> tuple[list[str], float] | None:
        """The addresses of ``name`` (A, else AAAA) and their TTL, or None."""
        resolver = self._dns()
        if resolver is None:
            return None
        import dns.exception
        import dns.resolver

        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(name, rdtype, search=False)
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as exc:
                log.info("DNS: %s %s: %s", name, rdtype, exc)
                return None
            ttl = float(answer.rrset.ttl) if answer.rrset is not None else MIN_TTL
            return [str(r.address) for r in answer], ttl
        return None

    async def srv(self, name: str) -> tuple[list[tuple[int, int, int, str]], float] | None:
        """(priority, weight, port, target) of each SRV record of ``name``, TTL; or None."""
        resolver = self._dns()
        if resolver is None:
            return None
        import dns.exception

        try:
            answer = await resolver.resolve(name, "SRV", search=False)
        except dns.exception.DNSException as exc:
            log.info("DNS: %s SRV: %s", name, exc)
            return None
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else MIN_TTL
        records = [
            (r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)) for r in answer
        ]
        return records, ttl


async def resolve_entry(
    resolver: Resolver, entry: Address, previous: list[Member]
) -> tuple[list[Member], float]:
    """The members one ``connect`` entry stands for now, and when to ask again."""
    now = time.monotonic()
    if is_static(entry):
        return [Member(entry, entry.weight)], STATIC
    if entry.kind == "srv":
        return await _resolve_srv(resolver, entry, previous, now)
    found = await resolver.host(entry.host)
    if found is None:
        members = previous or [Member(entry, entry.weight)]
        return members, now + RETRY_SECONDS
    ips, ttl = found
    members = [Member(Address("tcp", host=ip, port=entry.port), entry.weight) for ip in ips]
    return members, now + _clamp(ttl)


async def _resolve_srv(
    resolver: Resolver, entry: Address, previous: list[Member], now: float
) -> tuple[list[Member], float]:
    found = await resolver.srv(entry.host)
    if found is None:
        return previous, now + RETRY_SECONDS
    records, ttl = found
    members = []
    for priority, weight, port, target in sorted(records):
        target_entry = Address("tcp", host=target, port=port)
        hosts, host_at = await resolve_entry(resolver, target_entry, [])
        ttl = min(ttl, max(MIN_TTL, host_at - now))
        for member in hosts:
            member.priority, member.weight = priority, max(1, weight)
            members.append(member)
    return members, now + _clamp(ttl)


def _clamp(ttl: float) -> float:
    return min(MAX_TTL, max(MIN_TTL, ttl))


def flatten(groups: Iterable[list[Member]]) -> list[Member]:
    """The members of every entry, in configured order."""
    return [member for group in groups for member in group]


def _set_servers(resolver: Any, servers: list[tuple[str, int]]) -> None:
    """Point ``resolver`` at ``servers`` (host, port), whatever the dnspython version.

    dnspython 2.4+ takes ``dns.nameserver`` objects, each with its own port (plain strings
    there get the resolver's one ``port``, 53); Debian 12's 2.3 has no such objects and
    reads a host -> port map instead.
    """
    try:
        import dns.nameserver
    except ImportError:  # dnspython < 2.4
        resolver.nameserver_ports = dict(servers)
        resolver.nameservers = [host for host, _ in servers]
        return
    resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
