"""SocketPool (sockets kept across reloads) and PidFile (locking, stale files)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tunnel.config import Config, parse_config
from tunnel.errors import ConfigErrors
from tunnel.process.listen import SocketPool
from tunnel.process.pidfile import PidFile, PidFileError, read_pid

from .harness import free_port


def config_for(*ports: int) -> Config:
    sections = [
        f"[l{port}]\naccept = 127.0.0.1:{port}\ncert = c.pem\nconnect = 127.0.0.1:1\n"
        for port in ports
    ]
    return parse_config("\n".join(sections), "/etc/t.ini")


def test_plan_reuses_sockets_of_unchanged_addresses() -> None:
    one, two = free_port(), free_port()
    pool = SocketPool()
    try:
        first = config_for(one)
        pool.commit(pool.plan(first, 2))
        (addr_one,) = pool.bound
        kept = list(pool.bound[addr_one])
        assert len(kept) == 2 and kept[0] is not kept[1]

        planned = pool.plan(config_for(one, two), 3)
        assert planned[addr_one][:2] == kept  # the same socket objects: nothing re-bound
        assert len(planned[addr_one]) == 3
        pool.commit(planned)
        assert all(sock.fileno() != -1 for sock in kept)

        planned = pool.plan(config_for(two), 1)
        pool.commit(planned)
        assert all(sock.fileno() == -1 for sock in kept)  # removed address: closed
        with socket.create_connection(("127.0.0.1", two), timeout=5):
            pass
    finally:
        pool.close_all()


def test_plan_failure_changes_nothing() -> None:
    port, taken = free_port(), free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config_for(port), 1))
        before = {addr: list(socks) for addr, socks in pool.bound.items()}
        with pytest.raises(ConfigErrors) as info:
            pool.plan(config_for(port, taken), 2)
        (error,) = info.value.errors
        assert (error.section, error.key) == (f"l{taken}", "accept")
        assert "another process listens there" in str(error)
        assert pool.bound == before
        assert all(sock.fileno() != -1 for socks in before.values() for sock in socks)
    finally:
        pool.close_all()
        blocker.close()


def test_discard_closes_only_fresh_sockets() -> None:
    kept_port, fresh_port = free_port(), free_port()
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config_for(kept_port), 1))
        planned = pool.plan(config_for(kept_port, fresh_port), 1)
        pool.discard(planned)
        assert all(s.fileno() != -1 for socks in pool.bound.values() for s in socks)
        fresh = [s for addr, socks in planned.items() if addr.port == fresh_port for s in socks]
        assert fresh and all(sock.fileno() == -1 for sock in fresh)
    finally:
        pool.close_all()


def test_pid_file_write_claim_remove(tmp_path: Path) -> None:
    path = str(tmp_path / "t.pid")
    first = PidFile(path)
    first.claim()
    first.write()
    assert read_pid(path) == os.getpid()
    second = PidFile(path)
    with pytest.raises(PidFileError, match=rf"already running \(pid {os.getpid()} holds"):
        second.claim()
    first.remove()
    assert not os.path.exists(path)
    assert not [p for p in os.listdir(tmp_path)]  # no temporary file left


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "t.pid"
    path.write_text("999999\n")  # a crashed run: nobody holds the lock
    pid_file = PidFile(str(path))
    pid_file.claim()
    pid_file.write(4242)
    assert path.read_text() == "4242\n"
    pid_file.remove()


def test_remove_leaves_someone_elses_file(tmp_path: Path) -> None:
    path = tmp_path / "t.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    path.unlink()
    path.write_text("77\n")  # replaced behind our back
    pid_file.remove()
    assert path.read_text() == "77\n"
