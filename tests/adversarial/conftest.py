"""Fixtures of the adversarial suite.

Most cases share one tunnel (2 workers) in front of one dispatching backend for the whole
package, so that :mod:`test_zz_leaks` can compare the tunnel's fds, sockets and RSS
before and after everything else. Cases that need their own backend (backend faults,
per-IP limits) start their own tunnels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.conftest import unreachable
from integration.harness import (
    Backend,
    BackendFactory,
    Certs,
    TunnelFactory,
    TunnelProcess,
    make_certs,
)

from .support import Figures, Guard, dispatch_handler, normal_exchange, process_figures

__all__ = ["unreachable"]  # a fixture of the integration tests, used here too

HANDSHAKE_TIMEOUT = 3.0


@pytest.fixture(scope="package")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A trustme CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="package")
def backend() -> Iterator[Backend]:
    """The dispatching backend behind the shared tunnel."""
    factory = BackendFactory()
    yield factory(dispatch_handler, backlog=1024)
    factory.close_all()


@pytest.fixture(scope="package")
def shared(
    certs: Certs, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TunnelProcess]:
    """The shared tunnel: 2 workers, handshake timeout 3 s."""
    factory = TunnelFactory(certs, tmp_path_factory.mktemp("shared"))
    try:
        yield factory(backend.address, workers=2, handshake_timeout=f"{HANDSHAKE_TIMEOUT}s")
    finally:
        factory.stop_all()


@pytest.fixture(scope="package")
def baseline(shared: TunnelProcess, certs: Certs) -> Figures:
    """The shared tunnel's figures after a warm-up (both workers, both TLS versions)."""
    for i in range(40):
        normal_exchange(shared, certs.client_context("1.2" if i % 2 else "1.3"), f"warm-{i}")
    figures = process_figures(shared)
    print(f"\nbaseline before the adversarial cases: {figures}")
    return figures


@pytest.fixture
def guard(
    shared: TunnelProcess, backend: Backend, certs: Certs, baseline: Figures
) -> Iterator[Guard]:
    """Normal clients served during the test; the test ends with ``guard.check()``."""
    g = Guard(shared, backend, certs).start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def start_tunnel(certs: Certs, tmp_path: Path) -> Iterator[TunnelFactory]:
    """Own tunnels of one test; all stopped by PID afterwards."""
    factory = TunnelFactory(certs, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def start_backend() -> Iterator[BackendFactory]:
    """Own backends of one test; all closed afterwards."""
    factory = BackendFactory()
    yield factory
    factory.close_all()
