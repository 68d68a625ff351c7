"""Runs last in the package: the shared tunnel's fds, sockets and RSS against the baseline
taken before the first adversarial case (figures also go to leak-figures.txt)."""

from __future__ import annotations

import pytest
from integration.harness import TunnelProcess, wait_until

from .support import Figures, process_figures, tcp_states

MAX_RSS_GROWTH_KIB = 64 * 1024  # both workers and the supervisor together


@pytest.mark.timeout(60)
def test_no_fd_or_socket_leak_and_bounded_rss(
    shared: TunnelProcess, baseline: Figures, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Connections of the last cases may still be lingering (up to 2 s): wait for the fd
    # count to come back rather than sampling once.
    wait_until(lambda: process_figures(shared).fds <= baseline.fds, 30, what="fds back")
    after = process_figures(shared)
    growth = after.rss_kib - baseline.rss_kib
    text = (
        f"before: {baseline}\nafter:  {after}\nRSS growth: {growth} KiB\n"
        f"TCP states after: {tcp_states(shared)}\n"
    )
    (tmp_path_factory.getbasetemp() / "leak-figures.txt").write_text(text)
    print("\n" + text)
    assert after.fds <= baseline.fds
    assert after.sockets <= baseline.sockets
    assert not tcp_states(shared).get("CLOSE_WAIT")
    assert growth < MAX_RSS_GROWTH_KIB
