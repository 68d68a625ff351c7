"""Metrics added with JA4 and groups: refusals by rule, negotiated groups, handshake results."""

from __future__ import annotations

from tunnel.observe import metrics
from tunnel.observe.reasons import CloseReason, HandshakeFailure


def test_groups_and_denials_are_merged_and_rendered() -> None:
    one, two = metrics.ListenerStats(), metrics.ListenerStats()
    one.groups["X25519"] += 2
    two.groups["P-521"] += 1
    two.denied["ja4"] += 3
    merged = metrics.merge([metrics.snapshot({"web": one}, {}), metrics.snapshot({"web": two}, {})])
    text = metrics.render(merged, metrics.SupervisorFacts()).decode()
    assert 'tunnel_key_exchange_groups_total{group="X25519",listener="web"} 2.0' in text
    assert 'tunnel_key_exchange_groups_total{group="P-521",listener="web"} 1.0' in text
    assert 'tunnel_clients_denied_total{listener="web",reason="ja4"} 3.0' in text


def test_refusals_before_the_handshake_count_as_handshake_results() -> None:
    stats = metrics.ListenerStats(active=3)
    stats.ended(CloseReason.DENIED, 0, 0)
    stats.ended(CloseReason.HANDSHAKE_FAILED, 0, 0, HandshakeFailure.BAD_CLIENT_HELLO)
    stats.passed_through()
    assert stats.handshakes == {"denied": 1, "bad_client_hello": 1, "passthrough": 1}
    assert stats.closed == {"denied": 1, "handshake failed": 1}
    assert {"denied", "bad_client_hello"} <= set(metrics.FAILURE_REASONS)
    assert CloseReason.DENIED.text("ja4 t13d") == "denied: ja4 t13d"
