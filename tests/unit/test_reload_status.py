"""The reload outcome the supervisor publishes for ``tunnel reload``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunnel.errors import TunnelError
from tunnel.process.reload_status import (
    FAILED,
    OK,
    PENDING,
    ReloadStatus,
    ReloadTracker,
    StatusFile,
    parse_status,
    read_status,
    wait_outcome,
)


def tracker() -> tuple[ReloadTracker, list[ReloadStatus]]:
    published: list[ReloadStatus] = []
    return ReloadTracker(published.append), published


def test_status_round_trip_and_half_written() -> None:
    status = ReloadStatus(3, 2, FAILED, "a: b\nstill serving")
    data = status.encode()
    assert data.count(b"\n") == 1  # one line, whatever the message holds
    assert parse_status(data) == status
    assert parse_status(data[:-1]) is None
    assert parse_status(b"") is None
    assert parse_status(b'{"serial": "x"}\n') is None


def test_reload_is_ok_only_once_the_new_generation_reports() -> None:
    track, published = tracker()
    track.begin()
    assert published[-1] == ReloadStatus(1, 1, PENDING)
    track.forked(2)
    track.poll(all_reporting=False)
    assert published[-1].state == PENDING
    track.poll(all_reporting=True)
    assert published[-1] == ReloadStatus(1, 2, OK, "generation 2 serving")
    track.poll(all_reporting=True)
    assert len(published) == 3  # nothing new to say


def test_failed_reload_keeps_generation() -> None:
    track, published = tracker()
    track.begin()
    track.failed("t.ini: [web] cert: missing")
    assert published[-1] == ReloadStatus(1, 1, FAILED, "t.ini: [web] cert: missing")


def test_new_worker_dying_before_it_reports_fails_the_reload() -> None:
    track, published = tracker()
    track.begin()
    track.forked(2)
    track.worker_died(1, "exited with status 1")
    assert published[-1].state == FAILED
    assert "worker 1 of generation 2 exited with status 1 during start-up" in published[-1].message
    track.poll(all_reporting=True)  # its replacement reporting does not turn it into ok
    assert published[-1].state == FAILED
    track.worker_died(0, "killed by signal 9")  # a later death is no reload's outcome
    assert len(published) == 3


def test_status_file_rewritten_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "t.pid.status")
    status_file = StatusFile(path)
    status_file.write(ReloadStatus(1, 2, PENDING))
    status_file.write(ReloadStatus(1, 2, OK, "generation 2 serving"))
    assert read_status(path) == ReloadStatus(1, 2, OK, "generation 2 serving")
    status_file.remove()
    assert not os.path.exists(path)
    assert read_status(path) is None


def test_wait_outcome(tmp_path: Path) -> None:
    path = str(tmp_path / "t.pid.status")
    status_file = StatusFile(path)
    status_file.write(ReloadStatus(4, 3, FAILED, "old news"))
    with pytest.raises(TunnelError, match=r"no reload outcome from pid \d+ within 0\.1s"):
        wait_outcome(path, 4, os.getpid(), 0.1)
    status_file.write(ReloadStatus(5, 4, OK, "generation 4 serving"))
    assert wait_outcome(path, 4, os.getpid(), 0.1).state == OK
    status_file.remove()
