"""The worker's event loop when every listener is compiled: one epoll wait per wake-up.

Theory of operation. A worker whose listeners all run on the compiled plane
(:mod:`tunnel.dataplane.fastplane`) has little for Python to do: each connection calls it
a few times, keep-alive requests and relayed bytes never. With uvloop watching the plane's
epoll fd as one reader, every wake-up still cost two epoll waits (uvloop's, then the
plane's) and a trip through uvloop and a Python call. Here the worker's loop is instead
an :class:`asyncio.SelectorEventLoop` whose selector is the plane's own epoll set:

* :class:`PlaneSelector` registers the loop's fds (its self-pipe, which is also the
  signal wakeup fd; resolver and health-check sockets; ...) in the plane's epoll set with
  ``Plane.watch``; C tells their events apart from the plane's by their tag.
* ``select(timeout)`` calls ``Plane.wait``, which waits with the GIL released, runs the
  plane's events in C and waits again, and returns to Python only when one of the loop's
  fds is ready, the timeout passes, a signal arrives, or a call from C into Python left
  asyncio work behind: a callback in the loop's ready queue (e.g. ``_stop_now.set()``
  when the last connection of a drain ends) or a new timer. So a wake-up with only plane
  events costs one ``epoll_wait`` and runs no Python (csrc/fp_wait.c has the details).
* Signals keep working as with any asyncio loop: handlers only record (the wakeup fd is
  the self-pipe, watched here), and the loop acts when ``select`` returns.

Workers with a Python-plane listener keep uvloop (``Worker.new_loop`` in
:mod:`tunnel.dataplane.worker` chooses). ``Plane.waits`` counts the epoll waits and the
returns to Python, for tests and the worker's DEBUG line at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
from selectors import SelectorKey
from typing import Any

log = logging.getLogger("tunnel.worker")


class PlaneSelector(selectors._BaseSelectorImpl):
    """A selector over a compiled plane's epoll set (see the module's docstring)."""

    def __init__(self, plane: Any) -> None:
        super().__init__()
        self.plane = plane
        self.loop: asyncio.AbstractEventLoop | None = None  # set by new_event_loop()

    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        key = super().register(fileobj, events, data)
        try:
            self.plane.watch(key.fd, events, False)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        key = super().unregister(fileobj)
        # Closed before it was unregistered: epoll forgot it then (as with EpollSelector).
        with contextlib.suppress(OSError):
            self.plane.watch(key.fd, 0, True)
        return key

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        # The loop's queue and timer heap are looked up at each call: the loop replaces
        # its heap when it drops cancelled timers.
        ready = getattr(self.loop, "_ready", None)
        scheduled = getattr(self.loop, "_scheduled", None)
        try:
            events = self.plane.wait(timeout, ready, scheduled)
        except Exception as exc:  # a call into Python from C failed: report it, go on
            if self.loop is None:
                raise
            self.loop.call_exception_handler(
                {"message": "the compiled data plane failed in an event", "exception": exc}
            )
            return []
        keys = self.get_map()
        result = []
        for fd, mask in events:
            key = keys.get(fd)
            if key is not None and key.events & mask:
                result.append((key, key.events & mask))
        return result

    def close(self) -> None:
        for key in list(self.get_map().values()):
            with contextlib.suppress(OSError):
                self.plane.watch(key.fd, 0, True)
        super().close()


def new_event_loop(plane: Any) -> asyncio.AbstractEventLoop:
    """An asyncio loop that selects through ``plane`` (a ``_fastplane.Plane``)."""
    selector = PlaneSelector(plane)
    loop = asyncio.SelectorEventLoop(selector)
    selector.loop = loop
    return loop


def selects_for(loop: asyncio.AbstractEventLoop, plane: Any) -> bool:
    """Whether ``loop`` runs ``plane``'s events itself (then nothing is to watch for it)."""
    selector = getattr(loop, "_selector", None)
    return isinstance(selector, PlaneSelector) and selector.plane is plane


def report(plane: Any) -> None:
    """The DEBUG line at a worker's exit: how often a wake-up needed Python."""
    waits, returns = plane.waits
    log.debug("event loop: %d epoll waits, %d returned to Python", waits, returns)
