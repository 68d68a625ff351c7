"""A worker's backend pools: built from the configuration, kept resolved, health-checked.

One :class:`~tunnel.dataplane.pool.Pool` per ``[backend:NAME]`` (shared by every listener
of the worker that routes to it) and one per listener with its own ``connect`` (named
``listener:NAME``). Two background tasks per worker at most: one re-resolves names when
their TTL expires (:mod:`.resolve`), one runs the active checks of the pools that ask for
them (``health_check = tcp | tls`` every ``health_interval``). Each worker checks for
itself, so a worker never trusts another's view; the metrics show a member up while any
worker sees it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from tunnel.config import Address, BackendConfig
from tunnel.dataplane.pool import Member, Pool
from tunnel.dataplane.resolve import STATIC, Resolver, flatten, resolve_entry
from tunnel.tls.eof import strict_eof

log = logging.getLogger("tunnel.pool")

START_SECONDS = 3.0  # how long a worker waits for its first answers before accepting
IDLE_SECONDS = 60.0  # the refresher's longest sleep


class Pools:
    """Every pool of a worker, by name."""

    def __init__(
        self, resolvers: tuple[Address, ...], backend_tls: Mapping[str, ssl.SSLContext]
    ) -> None:
        self.resolver = Resolver(resolvers)
        self.backend_tls = backend_tls
        self.pools: dict[str, Pool] = {}
        self.specs: dict[str, BackendConfig] = {}
        self._entries: dict[str, list[list[Member]]] = {}  # per pool, per connect entry
        self._due: dict[str, list[float]] = {}  # per pool, per entry: when to re-resolve
        self._tasks: list[asyncio.Task[None]] = []

    def pool(self, key: str, backend: BackendConfig) -> Pool:
        """The pool of ``backend`` (created on first use, literal members filled in)."""
        pool = self.pools.get(key)
        if pool is None:
            pool = Pool(key, backend.balance, backend.max_fails, backend.fail_backoff)
            self.pools[key] = pool
            self.specs[key] = backend
            groups = [[Member(a, a.weight)] if a.kind != "srv" else [] for a in backend.connect]
            self._entries[key] = groups
            self._due[key] = [0.0] * len(groups)
            pool.members = flatten(groups)
        return pool

    async def start(self) -> None:
        """First answers for every name (bounded), then the background tasks."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_SECONDS):
                await self._refresh(time.monotonic())
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresher()))
        if any(spec.health_check != "off" for spec in self.specs.values()):
            self._tasks.append(loop.create_task(self._checker()))

    def stop(self) -> None:
        """Cancel the background tasks (the worker is draining)."""
        for task in self._tasks:
            task.cancel()

    async def _refresh(self, now: float) -> float:
        """Re-resolve every entry that is due; return when the next one is."""
        nxt = now + IDLE_SECONDS
        for key, spec in self.specs.items():
            due, groups = self._due[key], self._entries[key]
            changed = False
            for i, entry in enumerate(spec.connect):
                if due[i] <= now:
                    groups[i], due[i] = await resolve_entry(self.resolver, entry, groups[i])
                    changed = True
                if due[i] != STATIC:
                    nxt = min(nxt, due[i])
            if changed:
                self.pools[key].replace(flatten(groups))
        return nxt

    async def _refresher(self) -> None:
        while True:
            nxt = await self._refresh(time.monotonic())
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def _checker(self) -> None:
        checked = {k: s for k, s in self.specs.items() if s.health_check != "off"}
        last = dict.fromkeys(checked, 0.0)
        while True:
            now = time.monotonic()
            due = [k for k in checked if now - last[k] >= checked[k].health_interval]
            for key in due:
                last[key] = now
            await asyncio.gather(*(self.check_pool(key) for key in due))
            wait = min(last[k] + checked[k].health_interval for k in checked) - time.monotonic()
            await asyncio.sleep(max(0.05, wait))

    async def check_pool(self, key: str) -> None:
        """One active check of every member of pool ``key``."""
        pool, spec = self.pools[key], self.specs[key]
        members = list(pool.members)
        results = await asyncio.gather(*(self._probe(spec, key, m.address) for m in members))
        for member, problem in zip(members, results, strict=True):
            down = problem is not None
            if down != member.check_down:
                if down:
                    log.warning(
                        "backend %s: %s failed its health check: %s", key, member.address, problem
                    )
                else:
                    log.info("backend %s: %s passed its health check: up", key, member.address)
            member.check_down = down

    async def _probe(self, spec: BackendConfig, key: str, address: Address) -> str | None:
        """None if ``address`` accepts a connection (and a TLS handshake), else why not."""
        ctx: ssl.SSLContext | None = None
        if spec.health_check == "tls":
            ctx = self.backend_tls.get(spec.name) or _unverified()
        host = spec.sni or (address.host if address.kind == "tcp" else None)
        try:
            async with asyncio.timeout(spec.connect_timeout):
                if address.kind == "unix":
                    _, writer = await asyncio.open_unix_connection(
                        address.path, ssl=ctx, server_hostname=host if ctx else None
                    )
                else:
                    _, writer = await asyncio.open_connection(
                        address.host, address.port, ssl=ctx, server_hostname=host if ctx else None
                    )
        except TimeoutError:
            return "timed out"
        except (OSError, ssl.SSLError) as exc:
            return str(getattr(exc, "strerror", None) or exc)
        writer.transport.abort()  # no FIN/close_notify dance for a probe
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        """Per pool, per member: [up (0/1), open connections], for the supervisor."""
        return {
            key: {str(m.address): [int(m.up(now)), m.active] for m in pool.members}
            for key, pool in self.pools.items()
        }


_UNVERIFIED: ssl.SSLContext | None = None


def _unverified() -> ssl.SSLContext:
    """For ``health_check = tls`` on a backend reached in plain TCP: does TLS work at all."""
    global _UNVERIFIED
    if _UNVERIFIED is None:
        ctx = strict_eof(ssl.create_default_context())  # the same on every 3.11
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _UNVERIFIED = ctx
    return _UNVERIFIED
