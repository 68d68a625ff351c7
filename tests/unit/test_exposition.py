"""Tunnel's Prometheus text writer says exactly what prometheus_client would say.

The reference is prometheus_client itself: the same metric families, built once with its
classes and once with :mod:`tunnel.observe.exposition`'s, must render to the same bytes.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import prometheus_client
import prometheus_client.core
import pytest

from tunnel.observe import exposition, metrics
from tunnel.observe.metrics import BackendStats, ListenerStats, SupervisorFacts
from tunnel.observe.reasons import CloseReason

FAMILY_CLASSES = ("CounterMetricFamily", "GaugeMetricFamily", "HistogramMetricFamily")


def reference_text(families: list[Any]) -> bytes:
    class Static:
        def collect(self) -> list[Any]:
            return families

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Static())  # type: ignore[arg-type]
    return prometheus_client.generate_latest(registry)


def tricky_families(kinds: ModuleType | Any) -> list[Any]:
    """Families with what is easy to get wrong: escapes, big and odd numbers, no labels."""
    counter = kinds.CounterMetricFamily("odd_total", 'help with \\ and\nnewline "q"', labels=["a"])
    counter.add_metric(['back\\slash "quoted"\nline'], 12345678)
    counter.add_metric(["ünïcode"], 0.1)
    gauge = kinds.GaugeMetricFamily("plain", "no labels")
    gauge.add_metric([], 1.9e9)
    many = kinds.GaugeMetricFamily("values", "numbers", labels=["n"])
    values = [0, -1, 1e-7, 123456.0, 1234567.0, 10000000, 1.5e16, 1e22, -12345678.5]
    values += [math.inf, -math.inf, 2**53 + 1]
    for value in values:
        many.add_metric([repr(value)], value)
    hist = kinds.HistogramMetricFamily("lat_seconds", "latency", labels=["z", "a"])
    hist.add_metric(["1", "2"], [("0.5", 1), ("1.0", 3), ("+Inf", 4)], 2.75)
    return [counter, gauge, many, hist]


def test_tricky_families_render_as_prometheus_client_renders_them() -> None:
    ours = exposition.generate_latest(tricky_families(exposition))
    assert ours == reference_text(tricky_families(prometheus_client.core))


def test_nan_is_written_as_prometheus_writes_it() -> None:
    gauge = exposition.GaugeMetricFamily("g", "nan")
    gauge.add_metric([], math.nan)
    assert exposition.generate_latest([gauge]).endswith(b"\ng NaN\n")


def test_tunnels_metrics_render_as_prometheus_client_renders_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snaps = []
    for seed in (1, 2):
        web = ListenerStats(accepted=3 * seed, active=seed, ip_refused=5)
        web.handshake_ok(0.02 * seed, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2")
        web.ended(CloseReason.DONE, 10**9 * seed, 3 * 10**8)
        web.ended(CloseReason.HANDSHAKE_TIMEOUT, 0, 0)
        backend = BackendStats()
        backend.connected(0.003 * seed)
        backend.failed("refused")
        snaps.append(metrics.snapshot({"web": web, "api": ListenerStats()}, {"b:1": backend}))
    merged = metrics.merge(snaps)
    facts = SupervisorFacts(
        workers_configured=2,
        workers_reporting=2,
        reloads={"ok": 1, "failed": 2},
        cert_not_after={("web", "/etc/c.pem"): 1893456000.0},
        handshake_failures_last_minute=4,
    )
    ours = metrics.render(merged, facts)
    for name in FAMILY_CLASSES:
        monkeypatch.setattr(metrics, name, getattr(prometheus_client.core, name))
    assert ours == reference_text(metrics.families(merged, facts))


def test_a_wrong_number_of_label_values_is_refused() -> None:
    counter = exposition.CounterMetricFamily("c", "doc", labels=["a", "b"])
    with pytest.raises(ValueError, match="label values"):
        counter.add_metric(["only one"], 1)
