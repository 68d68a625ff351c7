"""Waiting for a condition: poll it with a deadline, never sleep a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

DEADLINE = 15.0
POLL = 0.02


def wait_until(
    condition: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``condition`` until it returns a truthy value (returned); fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)  # the poll interval, not a guess at how long anything takes


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> None:
    """Poll ``check`` until it returns true; fail the test after ``timeout`` seconds."""
    try:
        wait_until(check, timeout, POLL, what)
    except AssertionError as exc:
        pytest.fail(str(exc))
