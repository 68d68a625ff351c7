"""A ticket key file that stays broken is not warned about at every refresh."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tunnel.tls import tickets


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_broken_ticket_key_file_warned_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(tickets, "_clock", lambda: now[0], raising=False)
    path = tmp_path / "tickets.key"
    path.write_bytes(os.urandom(80))
    keys = tickets.TicketKeys(str(path))
    caplog.set_level(logging.INFO, logger="tunnel.tickets")

    path.write_bytes(b"short")  # replaced by something unusable, and left so
    for _ in range(30):  # a minute of refreshes, 2 s apart
        assert not keys.refresh()
        now[0] += tickets.REFRESH_SECONDS
    assert len(warnings(caplog)) == 1
    assert "holds 5 bytes" in warnings(caplog)[0]
    assert "keeping the previous keys" in warnings(caplog)[0]

    now[0] += tickets.WARN_AGAIN_SECONDS
    keys.refresh()
    assert len(warnings(caplog)) == 2  # still broken: said again, much later

    path.write_bytes(os.urandom(160))  # repaired
    assert keys.refresh()
    path.write_bytes(b"x" * 81)  # broken again: said at once
    keys.refresh()
    keys.refresh()
    assert len(warnings(caplog)) == 3
    assert "holds 81 bytes" in warnings(caplog)[-1]
