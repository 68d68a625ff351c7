"""Per-IP limits: counting, refusing, dict hygiene and the rate-limited summary line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tunnel.dataplane.limits import PerIPLimits


class FakeLoop:
    """Records call_later instead of scheduling (no event loop needed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any) -> asyncio.TimerHandle:
        self.calls.append((delay, callback))
        return asyncio.TimerHandle(0.0, callback, (), asyncio.new_event_loop())


def limits(conns: int = 0, shakes: int = 0) -> tuple[PerIPLimits, FakeLoop]:
    loop = FakeLoop()
    return PerIPLimits("web", conns, shakes, loop), loop  # type: ignore[arg-type]


def test_disabled_by_default() -> None:
    assert not limits()[0].enabled
    assert limits(conns=1)[0].enabled
    assert limits(shakes=1)[0].enabled


def test_connection_cap_per_address() -> None:
    lim, _ = limits(conns=2)
    assert lim.admit("10.0.0.1") and lim.admit("10.0.0.1")
    assert not lim.admit("10.0.0.1")
    assert lim.admit("10.0.0.2"), "another address is not affected"
    lim.handshake_ended("10.0.0.1")
    assert not lim.admit("10.0.0.1"), "a finished handshake still holds a connection"
    lim.connection_ended("10.0.0.1")
    assert lim.admit("10.0.0.1")
    assert lim.refused == 2


def test_handshake_cap_frees_on_handshake_end() -> None:
    lim, _ = limits(shakes=1)
    assert lim.admit("::1")
    assert not lim.admit("::1")
    lim.handshake_ended("::1")
    assert lim.admit("::1"), "the connection stays, its handshake slot is free"
    assert lim.connections == {"::1": 2}


def test_counts_drop_to_empty() -> None:
    """Addresses with nothing open are forgotten, so a scan cannot grow the dicts."""
    lim, _ = limits(conns=5, shakes=5)
    for i in range(100):
        ip = f"192.0.2.{i}"
        assert lim.admit(ip)
        lim.handshake_ended(ip)
        lim.connection_ended(ip)
    assert lim.connections == {} and lim.handshakes == {}


def test_one_summary_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    lim, loop = limits(conns=1)
    lim.admit("198.51.100.7")
    for _ in range(1000):
        lim.admit("198.51.100.7")
    for i in range(5):
        lim.admit(f"203.0.113.{i}")
        lim.admit(f"203.0.113.{i}")
    assert len(loop.calls) == 1, "one timer for the whole window, not one per refusal"
    with caplog.at_level(logging.WARNING, logger="tunnel.limits"):
        lim.report()
        lim.report()  # nothing new: no line
    (record,) = caplog.records
    message = record.getMessage()
    assert "refused 1005 connection(s)" in message
    assert "198.51.100.7 (1000)" in message
    assert "and 3 other address(es)" in message
    assert "max_connections_per_ip 1" in message
    lim.admit("198.51.100.7")
    assert len(loop.calls) == 2, "a new window starts a new timer"
