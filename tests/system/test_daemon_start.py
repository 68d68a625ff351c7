"""Starting as a daemon: what the terminal is told, and a relative ``-c`` path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.http import fetch

from .conftest import Backend, Certs, Launcher, write_certs
from .modes import Service, start_service, stopping_all

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by the test; all stopped at teardown, by pid."""
    with stopping_all() as started:
        yield started


def test_daemon_prints_one_line_when_started(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, services: list[Service]
) -> None:
    service = start_service(tunnel, tmp_path, certs, hello_backend, "daemon", services)
    assert service.launched.stdout() == f"started, pid {service.pid}, log: {service.log_path}\n"
    assert service.launched.stderr() == ""


def test_relative_config_path_survives_daemonizing(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, services: list[Service]
) -> None:
    # The daemon runs in "/", so "tunnel.ini" would name /tunnel.ini on reload.
    service = start_service(
        tunnel, tmp_path, certs, hello_backend, "daemon", services, relative=True
    )
    write_certs(certs.ca, certs.cert_pem.parent)
    result = tunnel.run("reload", "-c", "tunnel.ini")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Reloaded pid {service.pid}: generation 2 serving\n"
    assert "reload failed" not in service.log()
    assert f"reload: reading {tmp_path / 'tunnel.ini'}" in service.log()
    assert fetch(service.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
