"""A reload that changes ``workers`` loses no connection, queued ones included."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.http import ClientLoop, read_all
from harness.process import generation_line

from tunnel.config import parse_config
from tunnel.process.listen import SocketPool

from .conftest import Backend, Certs, Launcher, alive, wait_for
from .modes import Service, start_service, stopping_all

pytestmark = pytest.mark.timeout(120)

QUEUED = 12  # over two sockets: all on one of them with probability 1/2048


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by the test; all stopped at teardown, by pid."""
    with stopping_all() as started:
        yield started


def set_workers(service: Service, count: int) -> None:
    text = service.config.read_text()
    service.config.write_text(re.sub(r"(?m)^workers = \d+$", f"workers = {count}", text))


class Queued:
    """Connections whose TCP handshake the kernel completed; TLS and GET in threads."""

    def __init__(self, service: Service, count: int) -> None:
        self.results: list[str] = []
        self.lock = threading.Lock()
        ctx = ssl.create_default_context(cafile=str(service.certs.ca_pem))
        raws = [socket.create_connection(("127.0.0.1", service.port), 15) for _ in range(count)]
        self.threads = [
            threading.Thread(target=self._finish, args=(ctx, raw), daemon=True) for raw in raws
        ]
        for thread in self.threads:
            thread.start()

    def _finish(self, ctx: ssl.SSLContext, raw: socket.socket) -> None:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                response = read_all(sock)
            result = "ok" if response.endswith(b"hello from the backend\n") else repr(response)
        except OSError as exc:
            result = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.results.append(result)

    def join(self) -> list[str]:
        for thread in self.threads:
            thread.join(30)
        return self.results


def test_workers_2_1_2_under_load_lose_nothing(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, services: list[Service]
) -> None:
    service = start_service(
        tunnel,
        tmp_path,
        certs,
        hello_backend,
        "foreground",
        services,
        workers="2",
        drain_timeout="1s",
    )
    with ClientLoop(service.running, threads=4) as loop:
        loop.wait_more(20)
    assert not loop.failures, loop.failures[:5]

    # Connections waiting in both sockets' backlogs while workers goes 2 -> 1: the first
    # generation is stopped, so none of them is accepted before the reload, and it goes
    # away (killed at its drain deadline) without accepting them.
    first = service.worker_pids()
    for pid in first:
        service.known_workers.add(pid)
        os.kill(pid, signal.SIGSTOP)
    queued = Queued(service, QUEUED)
    set_workers(service, 1)
    service.signal(signal.SIGHUP)
    service.wait_log(generation_line(2))
    results = queued.join()
    wait_for("generation 1 to be gone", lambda: not any(alive(pid) for pid in first))
    assert results == ["ok"] * QUEUED, [r for r in results if r != "ok"]

    with ClientLoop(service.running, threads=4) as loop:
        loop.wait_more(20)
        set_workers(service, 2)
        service.signal(signal.SIGHUP)
        service.wait_log(generation_line(3))
        loop.wait_more(20)
        set_workers(service, 1)
        service.signal(signal.SIGHUP)
        service.wait_log(generation_line(4))
        loop.wait_more(20)
    assert not loop.failures, loop.failures[:5]


def test_fewer_workers_keep_and_share_the_removed_slots_sockets() -> None:
    text = "[web]\naccept = 127.0.0.1:0\ncert = c.pem\nconnect = 127.0.0.1:1\n"
    config = parse_config(text, "/etc/t.ini")
    pool = SocketPool()
    try:
        pool.commit(pool.plan(config, 3))
        (addr,) = pool.bound
        three = list(pool.bound[addr])
        pool.commit(pool.plan(config, 2))
        assert pool.bound[addr] == three  # none closed: a closed one drops its backlog
        assert all(sock.fileno() != -1 for sock in three)
        # Each worker has its own socket, and both accept from the spare one.
        assert pool.for_worker(config, 0, 2) == {"web": [three[0], three[2]]}
        assert pool.for_worker(config, 1, 2) == {"web": [three[1], three[2]]}
        pool.commit(pool.plan(config, 3))  # back up: the spare is slot 2's again
        assert pool.bound[addr] == three
        assert pool.for_worker(config, 2, 3) == {"web": [three[2]]}
    finally:
        pool.close_all()
