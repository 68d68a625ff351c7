"""Per-address rate limits shared by every worker of an instance.

``max_connection_rate_per_ip`` and ``max_handshake_rate_per_ip`` are token buckets per
(listener, client address). Unlike the concurrent caps of :mod:`.limits`, which each
worker counts alone, the buckets live in one table that the supervisor maps before
forking (:class:`RateTable`), so the configured rate is what a client gets whatever the
number of workers, and whichever worker the kernel hands each connection to.

* The arithmetic is pure (:func:`admit`, :func:`refund`) and tested without I/O.
* The table is a ``memfd`` mapped shared: a fixed number of groups of :data:`GROUP_SLOTS`
  slots, each slot ``(key, stamp, connection tokens, handshake tokens)``. An address
  hashes to one group; a worker holds an ``fcntl`` byte-range lock on that group (and
  only it) while it reads and writes the slot, so workers contend only on the same group.
  Memory is bounded whatever the number of addresses: an address with no slot takes an
  empty one, else the one touched longest ago (its bucket is the one most likely refilled
  to full, which is the same as having no entry).
* The check is one hash, one lock and two small struct reads per connection, and nothing
  per chunk. A refused connection is reset before any TLS byte (see ``connection.py``).
* ``max_handshake_rate_per_ip`` counts full handshakes: a token is taken when the
  connection is admitted and given back when its handshake resumed a session, so clients
  that resume are limited by the connection rate only.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import time
from collections import Counter

from tunnel.config import ListenerConfig, Rate
from tunnel.dataplane.limits import REPORT_INTERVAL, top_sources
from tunnel.observe.metrics import ListenerStats

log = logging.getLogger("tunnel.limits")

SLOT = struct.Struct("=Qddd")  # key, stamp (monotonic seconds), connection tokens, handshake tokens
GROUP_SLOTS = 8
GROUP_BYTES = SLOT.size * GROUP_SLOTS
GROUPS = 8192  # 65536 slots: 2 MiB, mapped once for the instance


class Verdict(enum.Enum):
    """The outcome of one admission check (the ``kind`` label of refusals)."""

    OK = "ok"
    CONNECTION = "connection"
    HANDSHAKE = "handshake"


# --------------------------------------------------------------------------- pure core


def refill(tokens: float, elapsed: float, rate: Rate) -> float:
    """The tokens of a bucket that held ``tokens`` ``elapsed`` seconds ago."""
    return min(float(rate.burst), tokens + max(0.0, elapsed) * rate.per_second)


def admit(
    conn: float,
    shakes: float,
    elapsed: float,
    conn_rate: Rate | None,
    hs_rate: Rate | None,
) -> tuple[Verdict, float, float]:
    """One new connection against both buckets; returns the verdict and the new tokens.

    Nothing is taken from either bucket when the connection is refused, so a client that
    keeps retrying over the limit gets exactly the configured rate, not less.
    """
    if conn_rate is not None:
        conn = refill(conn, elapsed, conn_rate)
        if conn < 1.0:
            return Verdict.CONNECTION, conn, shakes
    if hs_rate is not None:
        shakes = refill(shakes, elapsed, hs_rate)
        if shakes < 1.0:
            return Verdict.HANDSHAKE, conn, shakes
    return (
        Verdict.OK,
        conn - 1.0 if conn_rate is not None else conn,
        shakes - 1.0 if hs_rate is not None else shakes,
    )


def refund(shakes: float, elapsed: float, hs_rate: Rate) -> float:
    """Give back the handshake token of a connection whose handshake resumed a session."""
    return min(float(hs_rate.burst), refill(shakes, elapsed, hs_rate) + 1.0)


def bucket_key(listener: str, ip: str) -> int:
    """A 64-bit fingerprint of (listener, address); 0 means "empty slot"."""
    digest = hashlib.blake2b(f"{listener}\0{ip}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


# --------------------------------------------------------------------------- shared table


class RateTable:
    """The token buckets of an instance, in a mapping shared with the forked workers."""

    def __init__(self, groups: int = GROUPS) -> None:
        self.groups = groups
        size = groups * GROUP_BYTES
        self._fd = os.memfd_create("tunnel-rates", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)  # MAP_SHARED: fork keeps it shared
        except BaseException:
            os.close(self._fd)
            raise

    def check(self, key: int, conn_rate: Rate | None, hs_rate: Rate | None) -> Verdict:
        """Admit one connection of bucket ``key`` (see :func:`admit`)."""
        return self._update(key, conn_rate, hs_rate, refunding=False)

    def give_back(self, key: int, hs_rate: Rate) -> None:
        """Return the handshake token of a resumed session (see :func:`refund`)."""
        self._update(key, None, hs_rate, refunding=True)

    def _update(
        self, key: int, conn_rate: Rate | None, hs_rate: Rate | None, *, refunding: bool
    ) -> Verdict:
        group = key % self.groups
        start = group * GROUP_BYTES
        buf = self._map
        fcntl.lockf(self._fd, fcntl.LOCK_EX, GROUP_BYTES, start)
        try:
            now = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every worker
            offset, found = _find(buf, start, key)
            if found:
                _, stamp, conn, shakes = SLOT.unpack_from(buf, offset)
                elapsed = now - stamp
            else:  # a new (or evicted) entry: full buckets
                conn = float(conn_rate.burst) if conn_rate is not None else 0.0
                shakes = float(hs_rate.burst) if hs_rate is not None else 0.0
                elapsed = 0.0
            if refunding:
                assert hs_rate is not None
                verdict, shakes = Verdict.OK, refund(shakes, elapsed, hs_rate)
            else:
                verdict, conn, shakes = admit(conn, shakes, elapsed, conn_rate, hs_rate)
            SLOT.pack_into(buf, offset, key, now, conn, shakes)
            return verdict
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, GROUP_BYTES, start)

    def claim(self, key: int, interval: float) -> float:
        """Claim the right to act now for ``key`` (at most once per ``interval`` across
        workers): 0.0 if claimed, else the seconds until it may be claimed."""
        start = key % self.groups * GROUP_BYTES
        fcntl.lockf(self._fd, fcntl.LOCK_EX, GROUP_BYTES, start)
        try:
            now = time.monotonic()
            offset, found = _find(self._map, start, key)
            if found:
                since: float = now - SLOT.unpack_from(self._map, offset)[1]
                if since < interval:
                    return interval - since
            SLOT.pack_into(self._map, offset, key, now, 0.0, 0.0)
            return 0.0
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, GROUP_BYTES, start)

    def close(self) -> None:
        """Unmap the table in this process (the others keep theirs)."""
        self._map.close()
        os.close(self._fd)


def _find(buf: mmap.mmap, start: int, key: int) -> tuple[int, bool]:
    """The slot of ``key`` in the group at ``start`` (True), else the slot to reuse (False)."""
    victim, oldest = start, float("inf")
    for offset in range(start, start + GROUP_BYTES, SLOT.size):
        slot_key, stamp, _, _ = SLOT.unpack_from(buf, offset)
        if slot_key == key:
            return offset, True
        if slot_key == 0:
            stamp = float("-inf")  # empty: the best victim
        if stamp < oldest:
            victim, oldest = offset, stamp
    return victim, False


# --------------------------------------------------------------------------- per listener


class ListenerRates:
    """One listener's rate limits in one worker: checks, refusal counts, summary lines."""

    __slots__ = (
        *("_loop", "_report", "_window", "conn_rate", "hs_rate", "listener", "refused"),
        "table",
    )

    def __init__(
        self,
        listener: str,
        table: RateTable,
        conn_rate: Rate | None,
        hs_rate: Rate | None,
        loop: asyncio.AbstractEventLoop,
        refused: Counter[str] | None = None,
    ) -> None:
        self.listener = listener
        self.refused: Counter[str] = refused if refused is not None else Counter()  # by kind
        self.table = table
        self.conn_rate = conn_rate
        self.hs_rate = hs_rate
        self._loop = loop
        self._window: Counter[str] = Counter()  # refusals since the last summary line
        self._report: asyncio.TimerHandle | None = None

    def check(self, ip: str) -> tuple[Verdict, int]:
        """Admit a connection from ``ip``: the verdict and the bucket key (for a refund)."""
        key = bucket_key(self.listener, ip)
        verdict = self.table.check(key, self.conn_rate, self.hs_rate)
        if verdict is not Verdict.OK:
            self._window[ip] += 1
            if self._report is None:
                self._report = self._loop.call_later(REPORT_INTERVAL, self.report)
        return verdict, key

    def admit(self, peer: object) -> int | None:
        """Admit a connection from socket address ``peer``: its bucket key (0 for a peer
        that is not an IP address: nothing counted), or None when it is refused."""
        if not (isinstance(peer, tuple) and peer):
            return 0
        verdict, key = self.check(str(peer[0]))
        if verdict is Verdict.OK:
            return key
        self.refused[verdict.value] += 1
        return None

    def resumed(self, key: int) -> None:
        """The handshake of an admitted connection resumed a session: not a full one."""
        if self.hs_rate is not None:
            self.table.give_back(key, self.hs_rate)

    def report(self, *, now: bool = False) -> None:
        """Log one summary line about the refusals since the last one (if any).

        Lines are claimed in the shared table, so that all workers together log at most
        one per second per listener; a worker that finds the second taken waits its turn.
        """
        self._report = None
        if not self._window:
            return
        if not now:
            wait = self.table.claim(bucket_key(self.listener, "\0report"), REPORT_INTERVAL)
            if wait > 0.0:
                self._report = self._loop.call_later(wait, self.report)
                return
        window, self._window = self._window, Counter()
        total = sum(window.values())
        if not total:
            return
        log.warning(
            "listener %s: refused %d connection(s) over the per-IP rates"
            " (max_connection_rate_per_ip %s, max_handshake_rate_per_ip %s) from %s",
            self.listener,
            total,
            self.conn_rate or "off",
            self.hs_rate or "off",
            top_sources(window),
        )

    def close(self) -> None:
        """Log what is pending now (the worker is stopping)."""
        if self._report is not None:
            self._report.cancel()
            self.report(now=True)


def listener_rates(
    config: ListenerConfig,
    table: RateTable | None,
    loop: asyncio.AbstractEventLoop,
    stats: ListenerStats,
) -> ListenerRates | None:
    """The rates of a listener, or None when it sets none (or there is no shared table)."""
    conn_rate, hs_rate = config.max_connection_rate_per_ip, config.max_handshake_rate_per_ip
    if table is None or not (conn_rate or hs_rate):
        return None
    return ListenerRates(config.name, table, conn_rate, hs_rate, loop, stats.rate_refused)
