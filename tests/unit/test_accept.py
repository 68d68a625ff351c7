"""The open-files cap on a worker's max_connections (pure arithmetic)."""

from __future__ import annotations

import resource

from tunnel.dataplane.accept import FD_RESERVE, fd_capped


def test_limit_below_the_files_allowed_is_kept() -> None:
    assert fd_capped(100, nofile=10_000) == 100


def test_limit_is_capped_by_two_descriptors_per_connection() -> None:
    assert fd_capped(10_000, nofile=1024) == (1024 - FD_RESERVE) // 2


def test_unlimited_files_keep_the_limit() -> None:
    assert fd_capped(10_000, nofile=resource.RLIM_INFINITY) == 10_000


def test_never_below_one() -> None:
    assert fd_capped(10, nofile=10) == 1
