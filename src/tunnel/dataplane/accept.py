"""Which listeners of a worker accept: paused at the worker's and each listener's limit.

Accepting is paused by closing the worker's *duplicate* of a listening socket (an
``asyncio.Server`` on ``sock.dup()``): the original stays open (in this worker and in the
supervisor), so the kernel keeps queueing new connections in the backlog instead of
refusing them, and accepting resumes on a fresh duplicate once connections have ended.
Closing happens at once, in the callback that reached the limit; reopening is
asynchronous (``create_server`` is a coroutine), so one task applies the wanted state
until it holds, however the limits moved meanwhile.

The worker's limit is also capped by the open-files limit (two descriptors per relayed
connection), so the worker waits at its limit instead of running into EMFILE, where the
event loop would have to accept and drop connections.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("tunnel.worker")

RESUME_FRACTION = 0.9
FD_RESERVE = 64  # descriptors kept for logs, pipes, listening sockets, the admin socket
FDS_PER_CONNECTION = 2  # client and backend


def fd_capped(max_connections: int, nofile: int | None = None) -> int:
    """``max_connections``, lowered to what the open-files limit allows."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, (nofile - FD_RESERVE) // FDS_PER_CONNECTION))


class AcceptGate:
    """Opens and closes the accepting servers of a worker's listeners."""

    def __init__(
        self,
        total_limit: int,
        limits: Mapping[str, int],
        sockets: Mapping[str, Sequence[socket.socket]],
        factories: Mapping[str, Callable[[], asyncio.BaseProtocol]],
        backlogs: Mapping[str, int],
    ) -> None:
        self.total_limit = total_limit
        self.limits = dict(limits)
        self.sockets = sockets
        self.factories = factories
        self.backlogs = backlogs
        self.total = 0
        self.counts = dict.fromkeys(limits, 0)
        self.full = False  # the worker's limit is reached
        self.full_listeners: set[str] = set()
        self.stopped = False
        self.servers: dict[str, list[asyncio.Server]] = {}
        self._applying: asyncio.Task[None] | None = None

    def wanted(self, name: str) -> bool:
        """Whether listener ``name`` should be accepting now."""
        return not (self.stopped or self.full or name in self.full_listeners)

    def opened(self, name: str) -> None:
        """A connection of ``name`` was accepted: pause at a limit."""
        self.total += 1
        self.counts[name] += 1
        if self.total >= self.total_limit and not self.full:
            self.full = True
            log.warning(
                "max_connections (%d) reached: not accepting until connections end",
                self.total_limit,
            )
            for listener in list(self.servers):
                self._close(listener)
        elif self.counts[name] >= self.limits[name] and name not in self.full_listeners:
            self.full_listeners.add(name)
            log.warning(
                "listener %s: max_connections (%d) reached: not accepting until connections end",
                name,
                self.limits[name],
            )
            self._close(name)

    def closed(self, name: str) -> None:
        """A connection of ``name`` ended: resume below the limits."""
        self.total -= 1
        self.counts[name] -= 1
        changed = False
        if self.full and self.total <= self.total_limit * RESUME_FRACTION:
            self.full = False
            changed = True
        resume_at = self.limits[name] * RESUME_FRACTION
        if name in self.full_listeners and self.counts[name] <= resume_at:
            self.full_listeners.discard(name)
            changed = True
        if changed and not self.stopped:
            self.apply()

    def stop(self) -> None:
        """Stop accepting for good (drain)."""
        self.stopped = True
        for name in list(self.servers):
            self._close(name)

    async def start(self) -> None:
        """Open every listener's servers (before the worker reports for duty)."""
        await self._apply()

    def apply(self) -> None:
        """Bring the servers in line with ``wanted`` (in a task: opening is async)."""
        if self._applying is None:
            self._applying = asyncio.get_running_loop().create_task(self._apply())

    async def _apply(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            changed = True
            while changed:
                changed = False
                for name in self.limits:
                    if self.wanted(name) and name not in self.servers:
                        servers = [
                            await loop.create_server(
                                self.factories[name],
                                sock=sock.dup(),
                                backlog=self.backlogs[name],
                            )
                            for sock in self.sockets[name]
                        ]
                        self.servers[name] = servers
                        changed = True
                    elif not self.wanted(name) and name in self.servers:
                        self._close(name)
                        changed = True
        finally:
            self._applying = None

    def _close(self, name: str) -> None:
        for server in self.servers.pop(name, []):
            server.close()
