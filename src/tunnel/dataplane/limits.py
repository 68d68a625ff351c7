"""Per-source-address limits of one listener in one worker.

``max_connections_per_ip`` caps the connections open at once from one client address and
``max_handshakes_per_ip`` the TLS handshakes in flight from it, so that one host cannot
take every slot of ``max_connections`` (or keep every handshake slot busy with slow
ClientHellos). The counts are kept per worker process: with ``workers = N`` the kernel
spreads one host's connections over the workers, so a host may reach up to N times the
limit in total. Sharing counts between processes would cost a lock or a round trip per
accept; per worker costs one dict update at accept and one at close, nothing per chunk.

A connection over a limit is refused at once, before any TLS byte is read. Refusals are
counted, and logged as at most one summary line per second (never one line per refused
connection, which a flood would turn into a log flood of its own).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

log = logging.getLogger("tunnel.limits")

REPORT_INTERVAL = 1.0  # seconds between two summary lines about refusals
_TOP = 3  # addresses named in a summary line


class PerIPLimits:
    """Counts open connections and handshakes per client address; refuses over the caps."""

    __slots__ = (
        "_loop",
        "_report",
        "_window",
        "connections",
        "handshakes",
        "listener",
        "max_connections",
        "max_handshakes",
        "refused",
    )

    def __init__(
        self,
        listener: str,
        max_connections: int,
        max_handshakes: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.listener = listener
        self.max_connections = max_connections or 0
        self.max_handshakes = max_handshakes or 0
        self._loop = loop
        self.connections: dict[str, int] = {}
        self.handshakes: dict[str, int] = {}
        self.refused = 0  # total, for statistics
        self._window: Counter[str] = Counter()  # refusals since the last summary line
        self._report: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one limit is set (otherwise nothing needs counting)."""
        return bool(self.max_connections or self.max_handshakes)

    def admit(self, ip: str) -> bool:
        """Count a new connection (and its handshake) from ``ip``; False if over a limit."""
        conns = self.connections.get(ip, 0)
        shakes = self.handshakes.get(ip, 0)
        if (self.max_connections and conns >= self.max_connections) or (
            self.max_handshakes and shakes >= self.max_handshakes
        ):
            self._refused(ip)
            return False
        self.connections[ip] = conns + 1
        self.handshakes[ip] = shakes + 1
        return True

    def handshake_ended(self, ip: str) -> None:
        """The handshake of an admitted connection from ``ip`` completed or failed."""
        _decrement(self.handshakes, ip)

    def connection_ended(self, ip: str) -> None:
        """An admitted connection from ``ip`` is closed."""
        _decrement(self.connections, ip)

    def _refused(self, ip: str) -> None:
        self.refused += 1
        self._window[ip] += 1
        if self._report is None:
            self._report = self._loop.call_later(REPORT_INTERVAL, self.report)

    def report(self) -> None:
        """Log one summary line about the refusals since the last one (if any)."""
        self._report = None
        window, self._window = self._window, Counter()
        total = sum(window.values())
        if not total:
            return
        log.warning(
            "listener %s: refused %d connection(s) over the per-IP limits"
            " (max_connections_per_ip %s, max_handshakes_per_ip %s) from %s",
            self.listener,
            total,
            self.max_connections or "off",
            self.max_handshakes or "off",
            top_sources(window),
        )

    def close(self) -> None:
        """Cancel a pending summary line (the worker is stopping)."""
        if self._report is not None:
            self._report.cancel()
            self.report()


def _decrement(counts: dict[str, int], ip: str) -> None:
    # Drop the key at zero: the dicts then hold only addresses with something open, so a
    # scan from many addresses cannot make them grow without bound.
    n = counts.get(ip, 0) - 1
    if n > 0:
        counts[ip] = n
    else:
        counts.pop(ip, None)


def top_sources(window: Counter[str]) -> str:
    """The addresses refused most in ``window``, for a summary line (pure)."""
    top = ", ".join(f"{ip} ({n})" for ip, n in window.most_common(_TOP))
    more = f" and {len(window) - _TOP} other address(es)" if len(window) > _TOP else ""
    return top + more
