"""The asyncio loop that selects through a compiled plane's epoll set (tunnel.dataplane.oneloop).

No listener here: these tests check the loop's own needs in that epoll set (fds, timers,
callbacks from threads, executors, signals) and that the plane's waits return to Python
only for them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tunnel.dataplane import oneloop
from tunnel.dataplane.plane import _import

MODULE, WHY = _import()
pytestmark = pytest.mark.skipif(MODULE is None, reason=f"no compiled plane: {WHY}")


def ignore(*_args: Any) -> None:
    return None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    assert MODULE is not None
    plane = MODULE.Plane(ignore, ignore, ignore, ignore, ignore, ignore, 100)
    loop = oneloop.new_event_loop(plane)
    assert oneloop.selects_for(loop, plane)
    try:
        yield loop
    finally:
        loop.close()


def waits(loop: asyncio.AbstractEventLoop) -> tuple[int, int]:
    selector = loop._selector  # type: ignore[attr-defined]
    result: tuple[int, int] = selector.plane.waits
    return result


def test_fds_timers_threads_and_executors(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[object]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b:
            threading.Timer(0.05, lambda: b.send(b"x")).start()
            got = await asyncio.wait_for(loop.sock_recv(a, 1), 5)
            await asyncio.sleep(0.02)
            future = loop.create_future()
            threading.Timer(0.05, loop.call_soon_threadsafe, (future.set_result, 7)).start()
            from_thread = await asyncio.wait_for(future, 5)
            executed = await loop.run_in_executor(None, sum, [1, 2, 3])
            # A writer on an fd that also has a reader: the selector's modify().
            ready = loop.create_future()
            loop.add_reader(b.fileno(), ignore)
            loop.add_writer(b.fileno(), lambda: ready.done() or ready.set_result(True))
            await asyncio.wait_for(ready, 5)
            loop.remove_writer(b.fileno())
            loop.remove_reader(b.fileno())
        return [got, from_thread, executed]

    assert loop.run_until_complete(main()) == [b"x", 7, 6]


def test_signal_handlers_run(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> None:
        got = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR2, got.set)
        try:
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGUSR2)
            await asyncio.wait_for(got.wait(), 5)
        finally:
            loop.remove_signal_handler(signal.SIGUSR2)

    loop.run_until_complete(main())


def test_a_long_wait_is_one_return(loop: asyncio.AbstractEventLoop) -> None:
    """A sleep is one epoll wait (nothing else is ready) that returns once, at its end;
    the loop's other steps (the task's, the loop's stop) are one poll each."""
    loop.run_until_complete(asyncio.sleep(0))
    before = waits(loop)
    loop.run_until_complete(asyncio.sleep(0.1))
    after = waits(loop)
    epoll_waits, returns = after[0] - before[0], after[1] - before[1]
    assert epoll_waits == returns <= 5, (before, after)


def test_a_failure_in_c_goes_to_the_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    selector = loop._selector  # type: ignore[attr-defined]

    class Broken:
        waits = (0, 0)

        def wait(self, *_args: Any) -> list[tuple[int, int]]:
            raise RuntimeError("broken")

        def watch(self, *args: Any) -> None:
            selector_plane.watch(*args)

    selector_plane = selector.plane
    selector.plane = Broken()
    try:
        assert selector.select(0) == []
    finally:
        selector.plane = selector_plane
    assert isinstance(reported[0]["exception"], RuntimeError)
