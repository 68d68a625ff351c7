"""The same operations in the foreground and as a daemon (``daemon = yes``).

A daemon used to go dark after its first reload or worker restart: every worker forked
after start-up closed a descriptor number that had been reused, and died. Each test here
forks at least one worker after start-up (a reload, a replaced worker) and then needs it
to serve.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.http import (
    ClientLoop,
    fetch,
    handshake_possible,
    read_all,
    routing_handler,
    slow_body,
    slow_handler,
    start_slow_transfer_at,
)
from harness.http import start_slow_transfer as start_slow
from harness.process import generation_line, generation_pids, served_by

from .conftest import Backend, Certs, Launcher, alive, port_accepts, wait_for, write_certs
from .modes import MODES, Service, start_service, stopping_all

pytestmark = pytest.mark.timeout(120)

BackendFactory = Callable[[Callable[[socket.socket], None]], Backend]
HELLO = b"hello from the backend\n"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """``foreground`` or ``daemon``."""
    return str(request.param)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by the test; all stopped at teardown, by pid."""
    with stopping_all() as started:
        yield started


def test_reloads_under_load_lose_no_connection(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    backend_factory: BackendFactory,
    mode: str,
    services: list[Service],
) -> None:
    backend = backend_factory(routing_handler)
    service = start_service(tunnel, tmp_path, certs, backend, mode, services, workers="2")
    first_generation = set(service.worker_pids())
    sock, first = start_slow_transfer_at(service.running, "/slow")
    reloads: list[Callable[[], object]] = [
        lambda: service.signal(signal.SIGHUP),
        lambda: tunnel.run("reload", "-c", str(service.config)).check_returncode(),
        lambda: service.signal(signal.SIGHUP),
    ]
    with sock, ClientLoop(service.running) as loop:
        loop.wait_more(20)
        for n, reload in enumerate(reloads, start=2):
            reload()
            service.wait_log(generation_line(n))
            loop.wait_more(20)
        assert not loop.failures, loop.failures[:5]
        data = read_all(sock, first)
    body = data.partition(b"\r\n\r\n")[2]
    assert hashlib.sha256(body).digest() == hashlib.sha256(slow_body()).digest()
    wait_for("generation 1 to finish", lambda: not first_generation & set(service.worker_pids()))
    assert set(service.worker_pids()) == generation_pids(service, 4)
    assert service.log().count("finished draining") >= 2
    assert "Bad file descriptor" not in service.log()


def test_killed_worker_is_replaced(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    hello_backend: Backend,
    mode: str,
    services: list[Service],
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, mode, services, workers="2")
    old = int(service.wait_log(r"worker 0 started \(pid (\d+)\)").group(1))
    assert old in service.worker_pids()
    offset = len(service.log())
    os.kill(old, signal.SIGKILL)
    service.wait_log(rf"worker 0 \(pid {old}\) killed by signal 9; restarting", offset)
    new = int(service.wait_log(r"worker 0 started \(pid (\d+)\)", offset).group(1))
    wait_for("the old worker to be reaped", lambda: not alive(old))
    # Both workers serve: keep connecting until the replacement has served one.
    wait_for(
        "the replacement worker to serve",
        lambda: (
            fetch(service.port, certs.ca_pem)[1].endswith(HELLO)
            and served_by(service, {new}, offset)
        ),
    )
    assert new in service.worker_pids()
    assert len(service.worker_pids()) == 2


def test_watch_reloads_changed_certificate(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    hello_backend: Backend,
    mode: str,
    services: list[Service],
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, mode, services, watch="yes")
    before, _ = fetch(service.port, certs.ca_pem)
    write_certs(certs.ca, certs.cert_pem.parent)
    service.wait_log(r"watch: .*cert\.pem.* changed; reloading")
    service.wait_log(generation_line(2))
    new_workers = generation_pids(service, 2)
    offset = len(service.log())

    def new_certificate_served() -> bool:
        # The old generation may accept for a moment until it is told to drain.
        after, response = fetch(service.port, certs.ca_pem)
        assert response.endswith(HELLO)
        return after != before and served_by(service, new_workers, offset)

    wait_for("the new certificate from the new generation", new_certificate_served)


def test_sigusr1_reopens_log_file(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    hello_backend: Backend,
    mode: str,
    services: list[Service],
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, mode, services)
    fetch(service.port, certs.ca_pem)
    wait_for("a connection line", lambda: "tunnel.conn: conn " in service.log())
    rotated = tmp_path / "tunnel.log.1"
    service.log_path.rename(rotated)
    service.signal(signal.SIGUSR1)
    wait_for("the reopened log file", service.log_path.exists)
    # The worker, the supervisor, and the workers of the next generation write there.
    fetch(service.port, certs.ca_pem)
    wait_for("the worker writing to the new file", lambda: "tunnel.conn: conn " in service.log())
    service.signal(signal.SIGHUP)
    service.wait_log(generation_line(2))
    new_workers = generation_pids(service, 2)
    wait_for(
        "a connection line from generation 2",
        lambda: (
            fetch(service.port, certs.ca_pem)[1].endswith(HELLO)
            and served_by(service, new_workers, 0)
        ),
    )
    assert "generation 2" not in rotated.read_text()
    assert service.launched.stderr() == ""


def test_sigterm_drains_transfer_in_flight(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    backend_factory: BackendFactory,
    mode: str,
    services: list[Service],
) -> None:
    backend = backend_factory(slow_handler)
    service = start_service(tunnel, tmp_path, certs, backend, mode, services)
    # Drain what a reloaded generation serves: the life of a long-running service.
    first_generation = set(service.worker_pids())
    service.signal(signal.SIGHUP)
    service.wait_log(generation_line(2))
    wait_for("generation 1 to finish", lambda: not first_generation & set(service.worker_pids()))
    sock, first = start_slow(service.running)
    with sock:
        service.signal(signal.SIGTERM)
        service.wait_log(r"stop signal: draining")
        service.wait_log(r"draining 1 connection")
        assert not handshake_possible(service.running)
        data = read_all(sock, first)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert hashlib.sha256(body).digest() == hashlib.sha256(slow_body()).digest()
    service.wait_exit()
    assert "tunnel stopped" in service.log()
    assert not service.pid_file.exists()
    assert not port_accepts(service.port)
