"""``tunnel reload`` waits for the outcome and says it (exit code 1 when it failed)."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.http import fetch
from harness.process import generation_pids

from .conftest import Backend, Certs, Launcher, alive
from .modes import MODES, Service, start_service, stopping_all

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by the test; all stopped at teardown, by pid."""
    with stopping_all() as started:
        yield started


@pytest.mark.parametrize("mode", MODES)
def test_reload_reports_the_new_generation_serving(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    hello_backend: Backend,
    services: list[Service],
    mode: str,
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, mode, services, workers="2")
    result = tunnel.run("reload", "-c", str(service.config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Reloaded pid {service.pid}: generation 2 serving\n"
    # "Serving" means every new worker is up and has reported, not only forked.
    new = generation_pids(service, 2)
    assert len(new) == 2 and all(alive(pid) for pid in new)
    assert "exited" not in service.log()
    assert fetch(service.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")


def test_failed_reload_exits_1_with_the_reason(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, services: list[Service]
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, "foreground", services)
    # Valid to `tunnel reload` (which only loads and builds), refused by the supervisor:
    # the new address is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = service.config.read_text()
        service.config.write_text(
            text
            + f"\n[more]\naccept = 127.0.0.1:{port}\ncert = {certs.cert_pem}\n"
            + f"key = {certs.key_pem}\nconnect = 127.0.0.1:{hello_backend.port}\n"
        )
        result = tunnel.run("reload", "-c", str(service.config))
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert f"[more] accept: cannot listen on 127.0.0.1:{port}" in lines[0]
    assert lines[0].startswith("tunnel: reload failed: ")
    assert lines[-1] == "tunnel: reload failed: still serving the previous configuration"
    assert result.stdout == ""
    assert fetch(service.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")

    # The next reload is judged on its own.
    service.config.write_text(text)
    result = tunnel.run("reload", "-c", str(service.config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Reloaded pid {service.pid}: generation 2 serving\n"


def test_reload_wait_is_bounded(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, services: list[Service]
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, "foreground", services)
    service.signal(signal.SIGSTOP)  # a supervisor that never answers
    try:
        result = tunnel.run("reload", "-c", str(service.config), "--timeout", "0.5")
    finally:
        service.signal(signal.SIGCONT)
    assert result.returncode == 1
    assert f"no reload outcome from pid {service.pid} within 0.5s" in result.stderr
    service.wait_log(r"generation 2 serving")  # the signal was delivered all the same
