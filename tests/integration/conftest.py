"""Fixtures of the integration tests (the machinery lives in ``harness.py``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import BackendFactory, Certs, TunnelFactory, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A trustme CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def start_tunnel(certs: Certs, tmp_path: Path) -> Iterator[TunnelFactory]:
    """Start ``tunnel run`` child processes; all are stopped by PID afterwards and their
    logs checked for crashes."""
    factory = TunnelFactory(certs, tmp_path)
    yield factory
    factory.stop_all()
    factory.check_logs()


@pytest.fixture
def start_backend() -> Iterator[BackendFactory]:
    """Start plain backends in threads; all are closed afterwards."""
    factory = BackendFactory()
    yield factory
    factory.close_all()


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A loopback address whose connects hang: a listener with backlog 0, already full."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=2)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        with pytest.raises(TimeoutError):  # the trick works on this kernel
            probe.connect(listener.getsockname())
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        probe.close()
        filler.close()
        listener.close()
