"""Backend pools: which address a connection tries first, and which are skipped (pure).

A pool is the member addresses of one backend (a ``[backend:NAME]``, or a listener's own
``connect``), each with a weight and, for SRV targets, a priority. For each connection
:meth:`Pool.candidates` gives the order to try: the balanced pick first, then the other
healthy members in configured order as failover. Health has two sources:

* passive: ``max_fails`` failures in a row (refused, timed out, TLS failed) take a member
  out for ``fail_backoff`` seconds; it is tried again after that, and one more failure
  takes it out again at once;
* active: the health checker (:mod:`.health`) sets ``check_down``.

When every member is out, all are tried anyway, in configured order: a pool that is all
down must not fail faster than the backends recover (and /readyz already says so).
Balancing: ``first`` keeps the configured order (failover); ``round-robin`` is smooth
weighted round robin (a member of weight 3 gets 3 of every 4 picks against one of weight
1, interleaved rather than bunched); ``least-connections`` picks the fewest open
connections per unit of weight, ties broken by the round-robin order.
No I/O and no clock: ``now`` is passed in, so this module is tested without sockets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tunnel.config import Address

log = logging.getLogger("tunnel.pool")


@dataclass(slots=True, eq=False)
class Member:
    """One address of a pool and what is known about it."""

    address: Address
    weight: int = 1
    priority: int = 0  # SRV priority: lower is preferred
    active: int = 0  # connections open through it (least-connections)
    fails: int = 0  # failures in a row
    down_until: float = 0.0  # passive back-off: skipped until then
    check_down: bool = False  # the last active check failed
    current: int = 0  # smooth weighted round robin state

    def up(self, now: float) -> bool:
        """True when neither health source has taken the member out."""
        return not self.check_down and self.down_until <= now


@dataclass(slots=True, eq=False)
class Pool:
    """The members of one backend and how connections are spread over them."""

    name: str
    balance: str = "first"
    max_fails: int = 1
    fail_backoff: float = 10.0
    members: list[Member] = field(default_factory=list)

    def candidates(self, now: float) -> list[Member]:
        """The members one connection tries, in order (see the module docstring)."""
        members = self.members
        if len(members) == 1:
            return members  # the common case, and nothing to choose (never mutated)
        healthy = [m for m in members if not m.check_down and m.down_until <= now]
        if not healthy:
            return list(members)
        best = min(m.priority for m in healthy)
        top = [m for m in healthy if m.priority == best]
        if len(top) == len(healthy) and (self.balance == "first" or len(top) == 1):
            return healthy  # configured order (no SRV priorities to sort by)
        if self.balance == "first" or len(top) == 1:
            pick = top[0]
        elif self.balance == "least-connections":
            least = min(m.active / m.weight for m in top)
            pick = _round_robin([m for m in top if m.active / m.weight == least])
        else:
            pick = _round_robin(top)
        rest = sorted((m for m in healthy if m is not pick), key=lambda m: m.priority)
        return [pick, *rest]

    def failed(self, member: Member, now: float, why: str) -> None:
        """A connect to ``member`` failed; take it out after ``max_fails`` in a row."""
        member.fails += 1
        if self.max_fails and member.fails >= self.max_fails:
            if member.down_until <= now:
                log.warning(
                    "backend %s: %s is down for %gs after %d failure(s) in a row: %s",
                    self.name,
                    member.address,
                    self.fail_backoff,
                    member.fails,
                    why,
                )
            member.down_until = now + self.fail_backoff

    def succeeded(self, member: Member) -> None:
        """A connect to ``member`` succeeded: it is up (as far as passive health goes)."""
        if member.down_until:
            log.info("backend %s: %s is up again", self.name, member.address)
        member.fails = 0
        member.down_until = 0.0

    def any_up(self, now: float) -> bool:
        """True while at least one member is up (an empty pool is down)."""
        return any(m.up(now) for m in self.members)

    def replace(self, fresh: list[Member]) -> None:
        """New members (re-resolved names); keep the state of addresses that stay."""
        known = {(m.address.host, m.address.port, m.address.path): m for m in self.members}
        merged = []
        for member in fresh:
            old = known.get((member.address.host, member.address.port, member.address.path))
            if old is not None:
                old.weight, old.priority = member.weight, member.priority
                member = old
            merged.append(member)
        self.members = merged


def _round_robin(members: list[Member]) -> Member:
    """Smooth weighted round robin: each pick adds every weight, the largest wins."""
    total = 0
    pick = members[0]
    for member in members:
        member.current += member.weight
        total += member.weight
        if member.current > pick.current:
            pick = member
    pick.current -= total
    return pick
