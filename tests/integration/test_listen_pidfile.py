"""SocketPool (sockets kept across reloads, port 0) and PidFile (locking, stale files)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tunnel.config import Address, Config, parse_config
from tunnel.config.values import parse_address
from tunnel.errors import ConfigErrors
from tunnel.process.listen import SocketPool, bound_address
from tunnel.process.pidfile import PidFile, PidFileError, read_pid

from .harness import has_ipv6_loopback


def config_for(*accepts: str) -> Config:
    """One listener per ``accept`` address, named l0, l1, ..."""
    sections = [
        f"[l{i}]\naccept = {accept}\ncert = c.pem\nconnect = 127.0.0.1:1\n"
        for i, accept in enumerate(accepts)
    ]
    return parse_config("\n".join(sections), "/etc/t.ini")


def ports(socks: list[socket.socket]) -> set[int]:
    return {sock.getsockname()[1] for sock in socks}


def test_plan_reuses_sockets_of_unchanged_addresses() -> None:
    pool = SocketPool()
    try:
        first = config_for("127.0.0.1:0")
        pool.commit(pool.plan(first, 2))
        (addr_one,) = pool.bound
        kept = list(pool.bound[addr_one])
        assert len(kept) == 2 and kept[0] is not kept[1]

        planned = pool.plan(config_for("127.0.0.1:0", "127.0.0.2:0"), 3)
        assert planned[addr_one][:2] == kept  # the same socket objects: nothing re-bound
        assert len(planned[addr_one]) == 3
        pool.commit(planned)
        assert all(sock.fileno() != -1 for sock in kept)
        (two,) = ports(planned[parse_address("127.0.0.2:0", listening=True)])

        pool.commit(pool.plan(config_for("127.0.0.2:0"), 1))
        assert all(sock.fileno() == -1 for sock in kept)  # removed address: closed
        with socket.create_connection(("127.0.0.2", two), timeout=5):
            pass
    finally:
        pool.close_all()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_port_zero_gives_every_worker_the_same_port(host: str) -> None:
    """accept = HOST:0: the kernel chooses one port and every worker's socket joins it
    (SO_REUSEPORT), so the port the start-up line names serves whichever worker."""
    if host == "::1" and not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    pool = SocketPool()
    try:
        config = config_for(f"[{host}]:0" if ":" in host else f"{host}:0")
        pool.commit(pool.plan(config, 3))
        (socks,) = pool.bound.values()
        (port,) = ports(socks)
        assert port != 0 and len({id(sock) for sock in socks}) == 3
        assert bound_address(socks[0]) == Address("tcp", host=host, port=port)
    finally:
        pool.close_all()


def test_reload_naming_the_chosen_port_keeps_the_sockets() -> None:
    """A config that first said port 0 and then names the port the kernel chose (as the
    start-up line showed it) reuses the sockets instead of failing on a busy port."""
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config_for("127.0.0.1:0"), 2))
        (kept,) = pool.bound.values()
        (port,) = ports(kept)
        planned = pool.plan(config_for(f"127.0.0.1:{port}"), 2)
        assert list(planned.values()) == [kept]
        pool.commit(planned)
        assert all(sock.fileno() != -1 for sock in kept)
        pool.close_all()

        # Port 0 again in a new listener beside the named port: a new port for it.
        pool.commit(pool.plan(config_for("127.0.0.1:0"), 1))
        (kept,) = pool.bound.values()
        (port,) = ports(kept)
        planned = pool.plan(config_for(f"127.0.0.1:{port}", "127.0.0.1:0"), 1)
        named, zero = planned.values()
        assert named == kept and ports(zero) != {port}
        pool.commit(planned)
    finally:
        pool.close_all()


def test_plan_failure_changes_nothing() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config_for("127.0.0.1:0"), 1))
        before = {addr: list(socks) for addr, socks in pool.bound.items()}
        with pytest.raises(ConfigErrors) as info:
            pool.plan(config_for("127.0.0.1:0", f"127.0.0.1:{taken}"), 2)
        (error,) = info.value.errors
        assert (error.section, error.key) == ("l1", "accept")
        assert "another process listens there" in str(error)
        assert pool.bound == before
        assert all(sock.fileno() != -1 for socks in before.values() for sock in socks)
    finally:
        pool.close_all()
        blocker.close()


def test_discard_closes_only_fresh_sockets() -> None:
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config_for("127.0.0.1:0"), 1))
        planned = pool.plan(config_for("127.0.0.1:0", "127.0.0.2:0"), 1)
        pool.discard(planned)
        assert all(s.fileno() != -1 for socks in pool.bound.values() for s in socks)
        fresh = [s for addr, socks in planned.items() if addr.host == "127.0.0.2" for s in socks]
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
