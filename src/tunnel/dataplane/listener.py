"""Per-worker state of one listener, shared by both data planes.

Kept apart from :mod:`tunnel.dataplane.connection` so that a worker whose listeners are
all on the compiled plane never imports the Python relay (``connection``, ``relay``,
``passthrough``, ``backend_tls``...): those modules are loaded, on first use, only where a
listener is served by the Python plane (see ``docs/performance.md``, "Footprint at rest").
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from tunnel.config import Address, BackendConfig, ListenerConfig
from tunnel.dataplane.backends import Pools
from tunnel.dataplane.limits import PerIPLimits
from tunnel.dataplane.rates import ListenerRates, RateTable, listener_rates
from tunnel.dataplane.sweep import IdleSweep
from tunnel.dataplane.targets import PoolSource, any_passthrough, listener_routes
from tunnel.observe.metrics import BackendStats, ListenerStats
from tunnel.tls.identity import AllowListCheck

if TYPE_CHECKING:
    from tunnel.dataplane.connection import ClientConnection
    from tunnel.dataplane.passthrough import Passthrough

UNIQUE_ID_BYTES = 16  # the spec allows up to 128; 16 random bytes never collide in practice


class AcceptControl(Protocol):
    """What a connection tells its worker (which pauses accepting at the limit)."""

    def opened(self, listener: str) -> None: ...

    def closed(self, listener: str) -> None: ...


class ListenerRuntime:
    """Per-worker state of one listener: its TLS context, backends, live connections."""

    def __init__(
        self,
        config: ListenerConfig,
        ctx: ssl.SSLContext,
        loop: asyncio.AbstractEventLoop,
        control: AcceptControl,
        backends: Mapping[str, BackendConfig] | None = None,
        counters: dict[str, BackendStats] | None = None,
        backend_tls: Mapping[str, ssl.SSLContext] | None = None,
        allow_check: AllowListCheck | None = None,
        rate_table: RateTable | None = None,
        pools: PoolSource | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        self.allow_check = allow_check  # why a client certificate was refused
        self.loop = loop
        self.control = control
        self.stats = ListenerStats()
        # Shared by all listeners of a worker: keyed by backend address.
        self.counters = counters if counters is not None else {}
        self.live: set[ClientConnection | Passthrough] = set()
        # One timer checks every relaying connection for idleness (no timer per connection).
        self.idle_sweep = IdleSweep(loop, config.idle_timeout / 4)
        # The Python plane's protocol class: ClientConnection unless the worker sets a
        # subclass (inbound PROXY header, plain clients), so the others pay nothing for
        # it. None until the first connection: the compiled plane never needs it.
        self.conn_class: type[ClientConnection] | None = None
        own = pools if pools is not None else Pools((), backend_tls or {})
        self.routes, self.pools = listener_routes(config, backends or {}, backend_tls or {}, own)
        self.deny_ja4 = frozenset(config.deny_ja4)
        # Only with a passthrough backend is a route chosen before the handshake.
        self.passthrough = any_passthrough(self.routes)
        # A ClientHello Tunnel cannot read is refused where it matters (passthrough or a
        # JA4 policy); elsewhere OpenSSL answers it, as it would without the reader.
        self.strict_hello = self.passthrough or bool(self.deny_ja4)
        limits = PerIPLimits(
            config.name, config.max_connections_per_ip, config.max_handshakes_per_ip, loop
        )
        # None when no per-IP limit is set: then a connection does not even look it up.
        self.per_ip: PerIPLimits | None = limits if limits.enabled else None
        # None when no rate is set, or without the shared table (a Worker made by a test).
        self.rates: ListenerRates | None = listener_rates(config, rate_table, loop, self.stats)

    def backend_stats(self, addr: Address) -> BackendStats:
        """The statistics of one backend address (created on first use)."""
        key = str(addr)
        stats = self.counters.get(key)
        if stats is None:
            stats = self.counters[key] = BackendStats()
        return stats

    def protocol_factory(self) -> ClientConnection:
        """Create the Python plane's protocol for one accepted client connection."""
        if self.conn_class is None:
            # First connection on the Python plane: its relay is imported now (by then
            # the worker has already imported it, see Worker.serve, unless a test built
            # this runtime by hand).
            from tunnel.dataplane.connection import ClientConnection

            self.conn_class = ClientConnection
        return self.conn_class(self)
