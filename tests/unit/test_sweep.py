"""IdleSweep: one timer for the idle checks of many connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from tunnel.dataplane.sweep import IdleSweep


class FakeHandle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Records call_later calls instead of running them."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, FakeHandle]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(callback)
        self.armed.append((delay, handle))
        return handle

    def fire(self) -> None:
        """Run the most recently armed timer."""
        _delay, handle = self.armed[-1]
        handle.callback()


class Conn:
    def __init__(self, checks_left: int, on_check: Callable[[], None] | None = None) -> None:
        self.checks_left = checks_left
        self.checked = 0
        self.on_check = on_check

    def idle_check(self) -> bool:
        self.checked += 1
        if self.on_check is not None:
            self.on_check()
        self.checks_left -= 1
        return self.checks_left > 0


def make(interval: float = 2.5) -> tuple[IdleSweep, FakeLoop]:
    loop = FakeLoop()
    return IdleSweep(cast(asyncio.AbstractEventLoop, cast(Any, loop)), interval), loop


def test_one_timer_for_many_connections() -> None:
    sweep, loop = make()
    conns = [Conn(10) for _ in range(100)]
    for conn in conns:
        sweep.add(conn)
    assert len(loop.armed) == 1
    assert loop.armed[0][0] == 2.5
    loop.fire()
    assert all(conn.checked == 1 for conn in conns)
    assert len(loop.armed) == 2  # re-armed once for everyone


def test_connections_done_with_checks_leave_and_the_timer_stops() -> None:
    sweep, loop = make()
    short, long = Conn(1), Conn(2)
    sweep.add(short)
    sweep.add(long)
    loop.fire()
    assert len(sweep) == 1 and len(loop.armed) == 2
    loop.fire()
    assert len(sweep) == 0
    assert len(loop.armed) == 2  # nothing left: no new timer
    sweep.add(Conn(5))
    assert len(loop.armed) == 3  # armed again on demand


def test_discard_stops_checks_even_during_a_tick() -> None:
    sweep, loop = make()
    victim = Conn(10)
    killer = Conn(10, on_check=lambda: sweep.discard(victim))
    sweep.add(killer)
    sweep.add(victim)
    sweep.discard(Conn(1))  # not registered: no error
    loop.fire()
    loop.fire()
    assert killer.checked == 2
    assert victim.checked <= 1  # checked at most in the tick that discarded it
    assert len(sweep) == 1
