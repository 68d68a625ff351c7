"""metrics.py: statistics, snapshots, merging and the Prometheus text, without I/O."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tunnel.observe import metrics
from tunnel.observe.metrics import BackendStats, ListenerStats, SupervisorFacts
from tunnel.observe.reasons import CloseReason, HandshakeFailure


def test_label_values_operators_know_stay() -> None:
    """The label values README lists (and dashboards use) are the enums' values."""
    assert metrics.FAILURE_REASONS == (
        "timeout",
        "unknown_sni",
        "no_shared_cipher",
        "bad_client_cert",
        "not_tls",
        "unsupported_version",
        "client_closed",
        "denied",
        "bad_client_hello",
        "other",
    )
    assert CloseReason.DONE.value == "done"
    assert CloseReason.HANDSHAKE_FAILED.value == "handshake failed"
    assert CloseReason.BACKEND_UNREACHABLE.value == "backend unreachable"


@pytest.mark.parametrize(
    ("reason", "failure", "closed", "result"),
    [
        (CloseReason.DONE, None, "done", None),
        (CloseReason.CLIENT_ERROR, None, "client error", None),  # not a handshake failure
        (CloseReason.HANDSHAKE_TIMEOUT, None, "handshake timeout", "timeout"),
        (CloseReason.CLOSED_IN_HANDSHAKE, None, "client closed during handshake", "client_closed"),
        (CloseReason.HANDSHAKE_FAILED, None, "handshake failed", "other"),
        (
            CloseReason.HANDSHAKE_FAILED,
            HandshakeFailure.UNKNOWN_SNI,
            "handshake failed",
            "unknown_sni",
        ),
    ],
)
def test_a_close_reason_is_counted_as_it_is(
    reason: CloseReason, failure: HandshakeFailure | None, closed: str, result: str | None
) -> None:
    stats = ListenerStats(active=1)
    stats.ended(reason, 5, 7, failure)
    assert dict(stats.closed) == {closed: 1}
    assert dict(stats.handshakes) == ({result: 1} if result else {})
    assert (stats.active, stats.bytes_in, stats.bytes_out) == (0, 5, 7)


def test_the_log_text_is_the_label_and_the_detail() -> None:
    assert CloseReason.DONE.text() == "done"
    assert CloseReason.HANDSHAKE_FAILED.text("no shared cipher") == (
        "handshake failed: no shared cipher"
    )


def worker_stats(seed: int) -> tuple[dict[str, ListenerStats], dict[str, BackendStats]]:
    web = ListenerStats(accepted=3 * seed, active=seed, clients_rejected=seed, ip_refused=5)
    web.handshake_ok(0.02, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2")
    web.ended(CloseReason.DONE, 100 * seed, 1000 * seed)
    web.ended(CloseReason.HANDSHAKE_TIMEOUT, 0, 0)
    backend = BackendStats()
    backend.connected(0.003)
    backend.failed("refused")
    return {"web": web}, {"127.0.0.1:8080": backend}


def test_snapshot_is_json_and_merges() -> None:
    snaps = [json.loads(json.dumps(metrics.snapshot(*worker_stats(n)))) for n in (1, 2)]
    merged = metrics.merge(snaps)
    web = merged["listeners"]["web"]
    assert web["accepted"] == 9
    assert web["active"] == 3 - 4  # each ended() ran twice without a matching open
    assert (web["bytes_in"], web["bytes_out"]) == (300, 3000)
    assert web["closed"] == {"done": 2, "handshake timeout": 2}
    assert web["handshakes"] == {"ok": 2, "timeout": 2}
    assert sum(web["hs_buckets"]) == 2
    backend = merged["backends"]["127.0.0.1:8080"]
    assert backend["connects"] == 2 and backend["failures"] == {"refused": 2}


def test_retire_keeps_counters_drops_gauges() -> None:
    retired = metrics.retire(metrics.snapshot(*worker_stats(2)))
    assert retired["listeners"]["web"]["active"] == 0
    assert retired["listeners"]["web"]["accepted"] == 6


def test_render_parses_back() -> None:
    merged = metrics.merge([metrics.snapshot(*worker_stats(1))])
    facts = SupervisorFacts(
        workers_configured=2,
        workers_reporting=1,
        worker_restarts=3,
        reloads={"ok": 1},
        cert_not_after={("web", "/c.pem"): 1.9e9},
        handshake_failures_last_minute=4,
    )
    text = metrics.render(merged, facts).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tunnel_connections_accepted_total", (("listener", "web"),))] == 3
    assert samples[("tunnel_clients_rejected_total", (("listener", "web"),))] == 1
    assert samples[("tunnel_connections_refused_per_ip_total", (("listener", "web"),))] == 5
    assert samples[("tunnel_bytes_total", (("direction", "out"), ("listener", "web")))] == 1000
    key = ("tunnel_handshakes_total", (("listener", "web"), ("result", "timeout")))
    assert samples[key] == 1
    hist = ("tunnel_handshake_duration_seconds_bucket", (("le", "0.025"), ("listener", "web")))
    assert samples[hist] == 1
    assert samples[("tunnel_handshake_duration_seconds_count", (("listener", "web"),))] == 1
    assert samples[("tunnel_worker_restarts_total", ())] == 3
    assert samples[("tunnel_reloads_total", (("result", "ok"),))] == 1
    cert = ("tunnel_certificate_not_after_seconds", (("listener", "web"), ("path", "/c.pem")))
    assert samples[cert] == 1.9e9
    failures = (
        "tunnel_backend_connect_failures_total",
        (("backend", "127.0.0.1:8080"), ("kind", "refused")),
    )
    assert samples[failures] == 1
    assert samples[("tunnel_handshake_failures_last_minute", ())] == 4
