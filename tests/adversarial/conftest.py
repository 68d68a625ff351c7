"""Fixtures of the adversarial suite.

Most cases share one tunnel (2 workers) in front of one dispatching backend for the whole
package. :func:`leak_check` measures that tunnel's fds, sockets and RSS after a warm-up,
before the first case of the package, and again after the last one, whatever order the
files run in: a leak fails the package's last test at teardown (the figures also go to
``leak-figures.txt`` in pytest's base temporary directory). Cases that need their own
backend (backend faults, per-IP limits) start their own tunnels.

The RSS bound of the package is :func:`rss_bound`, requested by the ``memory_bound``
tests: under AddressSanitizer freed memory is held in quarantine (256 MiB a process) so
that a use after free is caught, and RSS grows with the bytes relayed by design. CI's ASan
run deselects them (``-m "not memory_bound"``), which drops this bound too; the fd, socket
and CLOSE_WAIT checks stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from harness.backends import Backend, BackendFactory
from harness.certs import Certs
from harness.fixtures import session_certs, start_backend, start_tunnel, unreachable
from harness.tunnel import TunnelFactory, TunnelProcess
from harness.waits import wait_until

from .support import (
    Figures,
    Guard,
    connections_held,
    dispatch_handler,
    fd_kinds,
    normal_exchange,
    process_figures,
    tcp_states,
)

__all__ = ["session_certs", "start_backend", "start_tunnel", "unreachable"]

HANDSHAKE_TIMEOUT = 3.0
MAX_RSS_GROWTH_KIB = 64 * 1024  # both workers and the supervisor together


@pytest.fixture(scope="package")
def backend() -> Iterator[Backend]:
    """The dispatching backend behind the shared tunnel."""
    factory = BackendFactory()
    try:
        yield factory(dispatch_handler, backlog=1024)
    finally:
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
    # A worker that crashed (an ASan report aborts it) is restarted by the supervisor and
    # the cases may still pass: its log says so.
    factory.check_logs()


BASELINE_KINDS: dict[int, dict[str, int]] = {}


@pytest.fixture(scope="package")
def baseline(shared: TunnelProcess, certs: Certs) -> Figures:
    """The shared tunnel's figures after a warm-up (both workers, both TLS versions)."""
    for i in range(40):
        normal_exchange(shared, certs.client_context("1.2" if i % 2 else "1.3"), f"warm-{i}")
    # The last exchanges' sockets may still be closing: figures taken then would hide a
    # leak of as many sockets later (and have: CI once saw 2 more fds here than at rest).
    wait_until(lambda: connections_held(shared) == 0, 30, what="no connection held")
    figures = process_figures(shared)
    BASELINE_KINDS.update(fd_kinds(shared))
    print(f"\nbaseline before the adversarial cases: {figures}")
    return figures


def settled(shared: TunnelProcess, baseline: Figures) -> Figures:
    """The shared tunnel's figures once it holds no connection and its fd count is back to
    the baseline's (the connections of the last cases may still be lingering, up to 2 s).
    After 30 s it measures anyway: what is still held then is a leak."""
    with contextlib.suppress(AssertionError):
        wait_until(
            lambda: connections_held(shared) == 0 and process_figures(shared).fds <= baseline.fds,
            30,
            what="no connection held, fds back",
        )
    return process_figures(shared)


@pytest.fixture(scope="package", autouse=True)
def leak_check(
    shared: TunnelProcess, baseline: Figures, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """After every case of the package: no fd or socket leaked, no CLOSE_WAIT."""
    yield
    after = settled(shared, baseline)
    # A connection of the last cases may still be closing (its client's FIN in, ours about
    # to go): a CLOSE_WAIT that lasts is a leak, one that ends within 30 s is not.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not tcp_states(shared).get("CLOSE_WAIT"), 30, what="no CLOSE_WAIT")
    states = tcp_states(shared)
    text = (
        f"before: {baseline}\nafter:  {after}\nRSS growth: {after.rss_kib - baseline.rss_kib}"
        f" KiB\nTCP states after: {states}\n"
        f"fds before, by pid: {BASELINE_KINDS}\nfds after, by pid:  {fd_kinds(shared)}\n"
    )
    (tmp_path_factory.getbasetemp() / "leak-figures.txt").write_text(text)
    print("\n" + text)
    assert after.fds <= baseline.fds, text
    assert after.sockets <= baseline.sockets, text
    assert not states.get("CLOSE_WAIT"), text


@pytest.fixture(scope="package")
def rss_bound(shared: TunnelProcess, baseline: Figures) -> Iterator[None]:
    """After every case of the package: the shared tunnel's RSS grew less than
    ``MAX_RSS_GROWTH_KIB`` since the warm-up (a package fixture, torn down after the last
    case whichever test requested it first)."""
    yield
    after = settled(shared, baseline)
    growth = after.rss_kib - baseline.rss_kib
    assert growth < MAX_RSS_GROWTH_KIB, f"before: {baseline}\nafter:  {after}"


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
