"""Metric families of backend pools: members up, open connections, listeners with a backend.

Worker snapshots carry, per pool and member, ``[up (0/1), open connections]`` and, per
listener, ``backend_up``; merged across workers they are sums, so a member is shown up
while any worker sees it up (each worker tracks health itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunnel.observe.exposition import GaugeMetricFamily, Metric


def pool_families(
    pools: Mapping[str, Any],
    listeners: Mapping[str, Any],
    gauge: type[GaugeMetricFamily] = GaugeMetricFamily,
) -> list[Metric]:
    """Backend pool health from merged snapshots: ``pools`` is pool -> address ->
    [workers that see it up, open connections]; ``listeners`` carry ``backend_up``.
    ``gauge`` is the family class (the metrics module's, which a test swaps)."""
    up = gauge(
        "tunnel_backend_up",
        "1 while a pool member is up (passive and active health) in at least one worker",
        labels=["pool", "address"],
    )
    workers_up = gauge(
        "tunnel_backend_up_workers", "Workers that see a pool member up", labels=["pool", "address"]
    )
    active = gauge(
        "tunnel_backend_active_connections",
        "Connections open to a pool member",
        labels=["pool", "address"],
    )
    for pool, members in sorted(pools.items()):
        for address, (n_up, n_active) in sorted(members.items()):
            up.add_metric([pool, address], 1 if n_up else 0)
            workers_up.add_metric([pool, address], n_up)
            active.add_metric([pool, address], n_active)
    listener_up = gauge(
        "tunnel_listener_backends_up",
        "1 while some backend of the listener is up (0 makes /readyz fail)",
        labels=["listener"],
    )
    for name, stats in sorted(listeners.items()):
        if "backend_up" in stats:
            listener_up.add_metric([name], 1 if stats["backend_up"] else 0)
    return [up, workers_up, active, listener_up]
