"""One timer for the idle checks of many connections.

Every relayed connection is checked for activity every quarter of its idle timeout (see
:mod:`tunnel.dataplane.relay`). With a timer per connection, each idle connection would hold a
``TimerHandle`` (about half a KiB with uvloop) and re-arm it four times per timeout; an
:class:`IdleSweep` instead keeps the connections of a listener in a set and checks them
all from one timer, which runs only while the set is not empty.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class IdleChecked(Protocol):
    """What the sweep needs of a connection."""

    def idle_check(self) -> bool:
        """One periodic check; False when the connection is done with checks."""
        ...


class IdleSweep:
    """Calls ``idle_check()`` of every registered connection every ``interval`` seconds."""

    __slots__ = ("_conns", "_loop", "_timer", "interval")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self.interval = interval
        self._conns: set[IdleChecked] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._conns)

    def add(self, conn: IdleChecked) -> None:
        """Check ``conn`` from the next tick on."""
        self._conns.add(conn)
        if self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._tick)

    def discard(self, conn: IdleChecked) -> None:
        """Stop checking ``conn`` (no-op if it is not registered)."""
        self._conns.discard(conn)

    def _tick(self) -> None:
        self._timer = None
        for conn in list(self._conns):  # a check may close (and discard) its connection
            if not conn.idle_check():
                self._conns.discard(conn)
        if self._conns:
            self._timer = self._loop.call_later(self.interval, self._tick)
