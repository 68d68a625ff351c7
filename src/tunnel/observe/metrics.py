"""Metric definitions, per-worker statistics, snapshot merging and Prometheus rendering.

Theory of operation
-------------------
This module does no I/O. Each worker keeps one :class:`ListenerStats` per listener and
one :class:`BackendStats` per backend address, updated once per connection event (never
per chunk: bytes are added when a connection ends). Periodically the worker turns them
into a JSON-able *snapshot* (:func:`snapshot`) and sends it to the supervisor, which
keeps the latest one per worker, :func:`merge` s them (plus the counters of workers that
have exited, so totals never go backwards) and renders Prometheus text with
:func:`render`. Label values are bounded: close reasons and handshake failures are the values
of the enums in :mod:`tunnel.observe.reasons` (chosen where the event happens, never
derived from free text), and TLS versions, ciphers and ALPN protocols come from what the
listener allows.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Not prometheus_client: it would load ~90 modules into the supervisor (see exposition).
from tunnel.observe.exposition import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    generate_latest,
)
from tunnel.observe.pool_metrics import pool_families
from tunnel.observe.reasons import CloseReason, HandshakeFailure

HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONNECT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Every result label of tunnel_handshakes_total other than "ok".
FAILURE_REASONS = tuple(failure.value for failure in HandshakeFailure)


def _observe(buckets: list[int], bounds: tuple[float, ...], value: float) -> None:
    # Non-cumulative counts per bucket (the last one is +Inf); cumulated when rendered.
    buckets[bisect.bisect_left(bounds, value)] += 1


@dataclass(slots=True)
class ListenerStats:
    """Counters of one listener in one worker."""

    accepted: int = 0
    active: int = 0
    clients_rejected: int = 0  # client certificates refused (CA, CRL or allow-lists)
    ip_refused: int = 0  # connections refused over the per-IP limits (never accepted)
    rate_refused: Counter[str] = field(default_factory=Counter)  # per-IP rates, by kind
    bytes_in: int = 0
    bytes_out: int = 0
    closed: Counter[str] = field(default_factory=Counter)
    handshakes: Counter[str] = field(default_factory=Counter)  # "ok" or a failure reason
    tls: Counter[str] = field(default_factory=Counter)  # "version cipher"
    alpn: Counter[str] = field(default_factory=Counter)
    groups: Counter[str] = field(default_factory=Counter)  # negotiated key exchange group
    denied: Counter[str] = field(default_factory=Counter)  # clients refused, by rule
    hs_buckets: list[int] = field(default_factory=lambda: [0] * (len(HANDSHAKE_BUCKETS) + 1))
    hs_sum: float = 0.0

    def handshake_ok(self, seconds: float, version: str, cipher: str, alpn: str) -> None:
        """A handshake completed after ``seconds``."""
        self.handshakes["ok"] += 1
        self.tls[f"{version} {cipher}"] += 1
        self.alpn[alpn] += 1
        _observe(self.hs_buckets, HANDSHAKE_BUCKETS, seconds)
        self.hs_sum += seconds

    def passed_through(self) -> None:
        """A ClientHello was read and the connection handed to a passthrough backend."""
        self.handshakes["passthrough"] += 1

    def ended(
        self,
        reason: CloseReason,
        bytes_in: int,
        bytes_out: int,
        failure: HandshakeFailure | None = None,
    ) -> None:
        """A connection ended for ``reason``.

        A handshake that failed is counted by ``failure`` where the data plane knew more
        (e.g. ``unknown_sni``), else by what the reason implies (``timeout``, ...).
        """
        self.active -= 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.closed[reason.value] += 1
        implied = reason.handshake_failure
        if implied is not None:
            self.handshakes[(failure or implied).value] += 1


@dataclass(slots=True)
class BackendStats:
    """Connect attempts to one backend address, in one worker."""

    connects: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # "refused", "timeout", ...
    buckets: list[int] = field(default_factory=lambda: [0] * (len(CONNECT_BUCKETS) + 1))
    seconds: float = 0.0

    def connected(self, seconds: float) -> None:
        """A connect succeeded after ``seconds``."""
        self.connects += 1
        _observe(self.buckets, CONNECT_BUCKETS, seconds)
        self.seconds += seconds

    def failed(self, kind: str) -> None:
        """A connect failed (``kind``: timeout, refused, unreachable, tls, error)."""
        self.failures[kind] += 1


def snapshot(
    listeners: Mapping[str, ListenerStats], backends: Mapping[str, BackendStats]
) -> dict[str, Any]:
    """A JSON-able copy of one worker's statistics."""
    return {
        "listeners": {
            name: {
                "accepted": s.accepted,
                "active": s.active,
                "clients_rejected": s.clients_rejected,
                "ip_refused": s.ip_refused,
                "rate_refused": dict(s.rate_refused),
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "closed": dict(s.closed),
                "handshakes": dict(s.handshakes),
                "tls": dict(s.tls),
                "alpn": dict(s.alpn),
                "groups": dict(s.groups),
                "denied": dict(s.denied),
                "hs_buckets": list(s.hs_buckets),
                "hs_sum": s.hs_sum,
            }
            for name, s in listeners.items()
        },
        "backends": {
            name: {
                "connects": b.connects,
                "failures": dict(b.failures),
                "buckets": list(b.buckets),
                "seconds": b.seconds,
            }
            for name, b in backends.items()
        },
    }


def _add(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping):
            _add(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            mine = into.setdefault(key, [0] * len(value))
            into[key] = [a + b for a, b in zip(mine, value, strict=True)]
        else:
            into[key] = into.get(key, 0) + value


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum snapshots key by key (counters, gauges, histogram buckets)."""
    total: dict[str, Any] = {"listeners": {}, "backends": {}, "pools": {}}
    for snap in snapshots:
        _add(total, {key: snap.get(key, {}) for key in total})
    return total


def retire(snap: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an exited worker's last snapshot that still counts: not its gauges."""
    result = merge([snap])
    for stats in result["listeners"].values():
        stats["active"] = 0
        stats.pop("backend_up", None)  # a gauge: an exited worker sees nothing
    result["pools"] = {}
    return result


@dataclass(frozen=True, slots=True)
class SupervisorFacts:
    """What only the supervisor knows."""

    workers_configured: int = 0
    workers_reporting: int = 0
    worker_restarts: int = 0
    reloads: Mapping[str, int] = field(default_factory=dict)  # result -> count
    cert_not_after: Mapping[tuple[str, str], float] = field(default_factory=dict)
    draining: bool = False
    handshake_failures_last_minute: int = 0
    acme_orders: Mapping[str, int] = field(default_factory=dict)  # result -> count
    acme_renew_at: Mapping[str, float] = field(default_factory=dict)  # names -> Unix time


def _histogram(
    name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Any, float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, (bounds, counts), total in series:
        running = 0
        cumulative = []
        for bound, count in zip((*bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
        family.add_metric(values, cumulative, total)
    return family


def families(merged: Mapping[str, Any], facts: SupervisorFacts) -> list[Metric]:
    """Prometheus metric families for merged worker snapshots and supervisor facts."""
    accepted = CounterMetricFamily(
        "tunnel_connections_accepted", "Client connections accepted", labels=["listener"]
    )
    active = GaugeMetricFamily(
        "tunnel_connections_active", "Client connections open now", labels=["listener"]
    )
    closed = CounterMetricFamily(
        "tunnel_connections_closed",
        "Client connections ended, by reason",
        labels=["listener", "reason"],
    )
    handshakes = CounterMetricFamily(
        "tunnel_handshakes",
        "TLS handshakes by result (ok or a failure reason)",
        labels=["listener", "result"],
    )
    tls = CounterMetricFamily(
        "tunnel_tls_negotiated",
        "Handshakes by TLS version and cipher",
        labels=["listener", "version", "cipher"],
    )
    alpn = CounterMetricFamily(
        "tunnel_alpn_negotiated",
        "Handshakes by ALPN protocol (- for none)",
        labels=["listener", "alpn"],
    )
    bytes_ = CounterMetricFamily(
        "tunnel_bytes",
        "Bytes relayed (in: from clients, out: to clients)",
        labels=["listener", "direction"],
    )
    rejected = CounterMetricFamily(
        "tunnel_clients_rejected",
        "Client certificates refused (client_ca, crl or allow-lists)",
        labels=["listener"],
    )
    ip_refused = CounterMetricFamily(
        "tunnel_connections_refused_per_ip",
        "Connections refused over max_connections_per_ip or max_handshakes_per_ip "
        "(not counted as accepted)",
        labels=["listener"],
    )
    groups = CounterMetricFamily(
        "tunnel_key_exchange_groups",
        "Handshakes by negotiated key exchange group (- for none, e.g. a resumption)",
        labels=["listener", "group"],
    )
    denied = CounterMetricFamily(
        "tunnel_clients_denied",
        "Clients refused by policy before the handshake (reason: ja4 for deny_ja4)",
        labels=["listener", "reason"],
    )
    rate_refused = CounterMetricFamily(
        "tunnel_connections_refused_rate",
        "Connections refused over max_connection_rate_per_ip (kind connection) or "
        "max_handshake_rate_per_ip (kind handshake), counted across workers",
        labels=["listener", "kind"],
    )
    hs_series = []
    for name, s in sorted(merged.get("listeners", {}).items()):
        for group, n in sorted(s.get("groups", {}).items()):
            groups.add_metric([name, group], n)
        for why, n in sorted(s.get("denied", {}).items()):
            denied.add_metric([name, why], n)
        for kind, n in sorted(s.get("rate_refused", {}).items()):
            rate_refused.add_metric([name, kind], n)
        accepted.add_metric([name], s.get("accepted", 0))
        rejected.add_metric([name], s.get("clients_rejected", 0))
        ip_refused.add_metric([name], s.get("ip_refused", 0))
        active.add_metric([name], s.get("active", 0))
        for reason, n in sorted(s.get("closed", {}).items()):
            closed.add_metric([name, reason], n)
        for outcome, n in sorted(s.get("handshakes", {}).items()):
            handshakes.add_metric([name, outcome], n)
        for key, n in sorted(s.get("tls", {}).items()):
            version, _, cipher = key.partition(" ")
            tls.add_metric([name, version, cipher], n)
        for proto, n in sorted(s.get("alpn", {}).items()):
            alpn.add_metric([name, proto], n)
        bytes_.add_metric([name, "in"], s.get("bytes_in", 0))
        bytes_.add_metric([name, "out"], s.get("bytes_out", 0))
        counts = s.get("hs_buckets", [0] * (len(HANDSHAKE_BUCKETS) + 1))
        hs_series.append(([name], (HANDSHAKE_BUCKETS, counts), s.get("hs_sum", 0.0)))
    hs_hist = _histogram(
        "tunnel_handshake_duration_seconds", "TLS handshake duration", ["listener"], hs_series
    )
    result: list[Metric] = [accepted, active, closed, handshakes, tls, alpn, bytes_, hs_hist]
    result += [rejected, ip_refused, groups, denied, rate_refused]
    result += _backend_families(merged.get("backends", {}))
    result += pool_families(merged.get("pools", {}), merged.get("listeners", {}), GaugeMetricFamily)
    result += _supervisor_families(facts)
    return result


def _backend_families(backends: Mapping[str, Any]) -> list[Metric]:
    connects = CounterMetricFamily(
        "tunnel_backend_connects", "Successful backend connects", labels=["backend"]
    )
    failures = CounterMetricFamily(
        "tunnel_backend_connect_failures", "Failed backend connects", labels=["backend", "kind"]
    )
    series = []
    for name, b in sorted(backends.items()):
        connects.add_metric([name], b.get("connects", 0))
        for kind, n in sorted(b.get("failures", {}).items()):
            failures.add_metric([name, kind], n)
        counts = b.get("buckets", [0] * (len(CONNECT_BUCKETS) + 1))
        series.append(([name], (CONNECT_BUCKETS, counts), b.get("seconds", 0.0)))
    latency = _histogram(
        "tunnel_backend_connect_seconds", "Backend connect latency", ["backend"], series
    )
    return [connects, failures, latency]


def _supervisor_families(facts: SupervisorFacts) -> list[Metric]:
    workers = GaugeMetricFamily("tunnel_workers", "Worker processes", labels=["state"])
    workers.add_metric(["configured"], facts.workers_configured)
    workers.add_metric(["reporting"], facts.workers_reporting)
    restarts = CounterMetricFamily("tunnel_worker_restarts", "Workers restarted after dying")
    restarts.add_metric([], facts.worker_restarts)
    reloads = CounterMetricFamily("tunnel_reloads", "Configuration reloads", labels=["result"])
    for result, n in sorted(facts.reloads.items()):
        reloads.add_metric([result], n)
    expiry = GaugeMetricFamily(
        "tunnel_certificate_not_after_seconds",
        "Certificate expiry (Unix time)",
        labels=["listener", "path"],
    )
    for (listener, path), when in sorted(facts.cert_not_after.items()):
        expiry.add_metric([listener, path], when)
    draining = GaugeMetricFamily("tunnel_draining", "1 while shutting down")
    draining.add_metric([], 1 if facts.draining else 0)
    recent = GaugeMetricFamily(
        "tunnel_handshake_failures_last_minute", "Failed handshakes in the last 60 seconds"
    )
    recent.add_metric([], facts.handshake_failures_last_minute)
    return [workers, restarts, reloads, expiry, draining, recent, *_acme_families(facts)]


def _acme_families(facts: SupervisorFacts) -> list[Metric]:
    if not facts.acme_orders and not facts.acme_renew_at:
        return []
    orders = CounterMetricFamily(
        "tunnel_acme_orders", "ACME certificate orders by result", labels=["result"]
    )
    for result, n in sorted(facts.acme_orders.items()):
        orders.add_metric([result], n)
    renew = GaugeMetricFamily(
        "tunnel_acme_renewal_at_seconds",
        "When the ACME certificate for these names is ordered next (Unix time)",
        labels=["names"],
    )
    for names, when in sorted(facts.acme_renew_at.items()):
        renew.add_metric([names], when)
    return [orders, renew]


def render(merged: Mapping[str, Any], facts: SupervisorFacts) -> bytes:
    """Prometheus text exposition of :func:`families`."""
    return generate_latest(families(merged, facts))
