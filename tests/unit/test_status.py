"""status.py: the summary of what metrics.py renders, without I/O."""

from __future__ import annotations

import datetime

import pytest

from tunnel.cli.status import Reply, counter_lines, summarise, target
from tunnel.config import Address
from tunnel.observe import metrics
from tunnel.observe.metrics import ListenerStats, SupervisorFacts
from tunnel.observe.reasons import CloseReason, HandshakeFailure

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp()
DAY = 86400.0


def rendered() -> str:
    web = ListenerStats(accepted=5, active=2)
    web.handshake_ok(0.02, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2")
    web.ended(CloseReason.DONE, 1_500, 2_000_000)
    web.ended(CloseReason.HANDSHAKE_FAILED, 0, 0, HandshakeFailure.NOT_TLS)
    api = ListenerStats(accepted=1, active=1)
    api.handshake_ok(0.01, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "-")
    merged = metrics.merge([metrics.snapshot({"web": web, "api": api}, {})])
    facts = SupervisorFacts(
        workers_configured=4,
        workers_reporting=3,
        worker_restarts=2,
        reloads={"ok": 1},
        cert_not_after={
            ("web", "/etc/web.pem"): NOW + 90 * DAY,
            ("api", "/etc/api.pem"): NOW + 10 * DAY,
            ("api", "/etc/old.pem"): NOW - 3 * DAY,
        },
        handshake_failures_last_minute=7,
    )
    return metrics.render(merged, facts).decode()


def test_summary_lines() -> None:
    reply = Reply(200, "ready\n", rendered())
    lines, warnings = summarise("127.0.0.1:9090", reply, NOW)
    assert lines[:10] == [
        "Tunnel at 127.0.0.1:9090: ready",
        "  workers: 4 configured, 3 reporting; 2 restarts; reloads: ok 1",
        "  active connections: 1",
        "  handshake failures in the last minute: 7",
        "  bytes: in 1 500 (from clients), out 2 000 000 (to clients)",
        "  listener [api]: accepted 1, active 1; handshakes ok 1, failed 0; bytes in 0, out 0",
        "  listener [web]: accepted 5, active 0; handshakes ok 1, failed 1; "
        "bytes in 1 500, out 2 000 000",
        "  cert [api] /etc/api.pem: expires 2030-01-11 (10 days)",
        "  cert [api] /etc/old.pem: expires 2029-12-29 (-3 days)",
        "  cert [web] /etc/web.pem: expires 2030-04-01 (90 days)",
    ]
    assert lines[10:] == counter_lines(reply.metrics_text)
    assert warnings == [
        "WARN [api] cert /etc/api.pem: expires in 10 days (2030-01-11); renew it",
        "WARN [api] cert /etc/old.pem: EXPIRED on 2029-12-29; renew it",
    ]


def test_every_counter_is_shown() -> None:
    text = rendered()
    lines = counter_lines(text)
    assert lines[0] == "  counters (total, then by label):"
    assert lines[1:4] == [
        "    alpn_negotiated: 2",
        "      listener=api alpn=-: 1",
        "      listener=web alpn=h2: 1",
    ]
    assert "    worker_restarts: 2" in lines
    assert "      listener=web reason=handshake failed: 1" in lines
    assert "    clients_rejected: 0" in lines  # a counter at zero still shows, without labels
    assert not any("listener=api direction" in line for line in lines)  # zeros left out
    # Every counter family rendered, and nothing that is not a counter.
    counters = {
        line.split("# TYPE tunnel_")[1].split()[0].removesuffix("_total")
        for line in text.splitlines()
        if line.startswith("# TYPE") and line.endswith(" counter")
    }
    shown = {line.strip().split(":")[0] for line in lines[1:] if not line.startswith("      ")}
    assert shown == counters and "workers" not in shown and len(counters) >= 10


def test_not_ready_shows_why() -> None:
    reply = Reply(503, "not ready: draining\n", rendered())
    lines, _ = summarise("[::1]:9090", reply, NOW)
    assert lines[0] == "Tunnel at [::1]:9090: not ready: draining"


def test_empty_metrics() -> None:
    lines, warnings = summarise("h:1", Reply(200, "ready", ""), NOW)
    assert lines[1] == "  workers: 0 configured, 0 reporting; 0 restarts"
    assert len(lines) == 5  # no counters section when there are none
    assert warnings == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3"), ("::1", "::1")],
)
def test_target_of_wildcards(host: str, expected: str) -> None:
    assert target(Address("tcp", host=host, port=9090)) == (expected, 9090)
