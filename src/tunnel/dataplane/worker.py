"""One worker process: an event loop serving the listening sockets it was handed.

The loop is uvloop's, unless every listener is on the compiled plane: then it is an asyncio
loop that selects through the plane's epoll set (:mod:`tunnel.dataplane.oneloop`), so that
the plane's events are run in C without a wake-up of Python.

Accepting is paused at ``max_connections`` (the worker's, capped by the open-files limit,
and each listener's) without refusing anyone: see :mod:`tunnel.dataplane.accept`.

SIGTERM starts a drain: stop accepting, let open connections finish until the drain
timeout, then close the rest with close_notify. A second SIGTERM closes everything now.
SIGINT is ignored here: the supervisor turns a Ctrl-C into SIGTERM for its workers.
SIGUSR1 reopens the log file (forwarded by the supervisor after a log rotation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

from tunnel._native import malloc as _malloc
from tunnel.config import Config, ListenerConfig, TunnelSettings
from tunnel.dataplane import fastplane, oneloop
from tunnel.dataplane.accept import AcceptGate, fd_capped
from tunnel.dataplane.backends import Pools
from tunnel.dataplane.fastplane import PYTHON, CompiledPlane
from tunnel.dataplane.listener import ListenerRuntime
from tunnel.dataplane.rates import RateTable
from tunnel.observe import metrics
from tunnel.observe.log import reopen_logs
from tunnel.observe.metrics import BackendStats
from tunnel.observe.modules import report_modules
from tunnel.observe.reasons import CloseReason
from tunnel.tls.bundle import TLSBundle
from tunnel.tls.tickets import REFRESH_SECONDS

if TYPE_CHECKING:
    from tunnel.dataplane.connection import ClientConnection
    from tunnel.dataplane.passthrough import Passthrough

log = logging.getLogger("tunnel.worker")

REPORT_SECONDS = 1.0


def python_protocol(listener: ListenerConfig) -> type[ClientConnection]:
    """The Python plane's protocol class for ``listener``, its relay imported on first use.

    Only listeners on the Python plane need these modules (~0.3 MB of heap, ~20 modules):
    a worker whose listeners are all compiled never imports them.
    """
    if listener.client:
        from tunnel.dataplane.plain_client import PlainClientConnection

        return PlainClientConnection
    if listener.proxy_from:
        from tunnel.dataplane.proxy_in import ProxiedConnection

        return ProxiedConnection
    from tunnel.dataplane.connection import ClientConnection

    return ClientConnection


def import_python_plane(config: Config) -> None:
    """Import the Python relay, and uvloop, now if a listener of ``config`` will use them.

    Called by the supervisor at start (before privileges are dropped) and in a reload's
    transaction: imported there, before the fork, the modules' pages are shared by every
    worker instead of being built again in each. A worker whose listeners are all compiled
    runs the plane's own loop (:mod:`tunnel.dataplane.oneloop`) and needs neither: without
    uvloop (10 modules), the supervisor and one worker take ~0.7 MB less anonymous PSS
    (bench/footprint.py).
    """
    backends = {backend.name: backend for backend in config.backends}
    on_python = [
        listener
        for listener in config.listeners
        if fastplane.choose(listener, backends, config.tunnel.dataplane)[0] == PYTHON
    ]
    for listener in on_python:
        python_protocol(listener)
    if on_python or not config.listeners:  # what Worker.new_loop will pick uvloop for
        import uvloop  # noqa: F401


class Worker:
    """The serving state of one worker process."""

    def __init__(
        self,
        config: Config,
        contexts: TLSBundle,
        sockets: dict[str, list[socket.socket]],
        report: socket.socket | None = None,
        rates: RateTable | None = None,
    ) -> None:
        self.config = config
        self.rates = rates  # the instance's shared per-IP rate buckets (mapped before fork)
        self.pools = Pools(config.tunnel.resolvers, {})  # TLS contexts: in serve()
        self.report = report  # to the supervisor: statistics snapshots, also "alive"
        self.backends: dict[str, BackendStats] = {}
        self.contexts = contexts
        self.sockets = sockets
        self.max_connections = fd_capped(config.tunnel.max_connections)
        if self.max_connections < config.tunnel.max_connections:
            # Waiting at the capped limit is the designed behaviour (no EMFILE, nothing
            # dropped). The default max_connections is a ceiling that many open-files limits
            # cannot reach: capping it is news (INFO), not something to fix at every start of
            # every worker. A value someone wrote that cannot be had is worth a WARNING.
            default = config.tunnel.max_connections == TunnelSettings().max_connections
            log.log(
                logging.INFO if default else logging.WARNING,
                "max_connections %d needs more open files than the limit allows"
                " (ulimit -n): using %d per worker",
                config.tunnel.max_connections,
                self.max_connections,
            )
        self.count = 0
        self.runtimes: list[ListenerRuntime] = []
        backends = {backend.name: backend for backend in config.backends}
        # Which data plane serves each listener, and why (tunnel.dataplane.fastplane).
        # The supervisor logs the choice once per generation (tunnel.process.reload).
        setting = config.tunnel.dataplane
        self.planes = {lc.name: fastplane.choose(lc, backends, setting) for lc in config.listeners}
        self.compiled: CompiledPlane | None = None
        self.gate = AcceptGate(
            self.max_connections,
            {lc.name: lc.max_connections for lc in config.listeners if self._on_python(lc.name)},
            sockets,
            {},
            {lc.name: lc.backlog for lc in config.listeners},
        )
        self.stopping = False
        self.hurry = False
        self._stop = asyncio.Event()
        self._stop_now = asyncio.Event()

    def _on_python(self, name: str) -> bool:
        return self.planes[name][0] == PYTHON

    def _live(self) -> int:
        return self.count + (self.compiled.live if self.compiled is not None else 0)

    def _plane(self) -> CompiledPlane:
        """The compiled plane, made at the first call (OSError: the kernel refused it)."""
        if self.compiled is None:
            module, _ = fastplane.load(self.config.tunnel.dataplane)
            assert module is not None
            backends = {backend.name: backend for backend in self.config.backends}
            self.compiled = CompiledPlane(module, self.max_connections, self, backends)
        return self.compiled

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """uvloop's loop; or, when no listener is on the Python plane, the compiled plane's.

        A listener the compiled plane refuses later (in serve()) is then served by the
        Python plane on that asyncio loop: slower than on uvloop, but served.
        """
        if self.planes and not any(self._on_python(name) for name in self.planes):
            try:
                plane = self._plane()
            except OSError as exc:
                log.warning("the compiled data plane could not start: %s", exc)
            else:
                log.debug("event loop: the compiled plane's epoll set")
                return oneloop.new_event_loop(plane.plane)
        # Imported here, not at the top: see import_python_plane (the supervisor imports
        # it before the fork whenever this line will be reached, bar the plane failing:
        # then this process, privileges dropped, may not be able to read it).
        try:
            import uvloop
        except ImportError as exc:
            log.warning("uvloop cannot be imported (%s): serving on asyncio's own loop", exc)
            return asyncio.new_event_loop()
        return uvloop.new_event_loop()

    def _serve_compiled(self, runtime: ListenerRuntime) -> None:
        """Hand ``runtime`` to the compiled plane; on refusal the Python plane serves it."""
        try:
            self._plane().add(runtime, self.sockets[runtime.name])
        except (OSError, RuntimeError, TypeError, ValueError) as exc:
            self.planes[runtime.name] = (PYTHON, f"the compiled plane refused it: {exc}")
            log.warning(
                "listener %s: python data plane (%s)", runtime.name, self.planes[runtime.name][1]
            )
            self.gate.limits[runtime.name] = runtime.config.max_connections
            self.gate.counts[runtime.name] = 0

    def compiled_closed(self) -> None:
        """A connection of the compiled plane ended (the plane keeps its own counts)."""
        if self.stopping and self._live() == 0:
            self._stop_now.set()

    # -- accept control (called by connections) ---------------------------------------
    def opened(self, listener: str) -> None:
        """A connection was accepted; pause accepting at a limit."""
        self.count += 1
        self.gate.opened(listener)

    def closed(self, listener: str) -> None:
        """A connection ended; resume accepting below the limits."""
        self.count -= 1
        self.gate.closed(listener)
        if self.stopping and self._live() == 0:
            self._stop_now.set()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self.hurry = True
            self._stop_now.set()
        self._stop.set()

    async def serve(self) -> None:
        """Serve until SIGTERM, then drain."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_signal)
        loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
        self.pools.backend_tls = self.contexts.backends
        for listener in self.config.listeners:
            tls = self.contexts.listeners[listener.name]
            runtime = ListenerRuntime(
                listener,
                tls.default,
                loop,
                self,
                {backend.name: backend for backend in self.config.backends},
                self.backends,
                self.contexts.backends,
                tls.allow_check,
                self.rates,
                self.pools,
            )
            self.runtimes.append(runtime)
            if not self._on_python(listener.name):
                self._serve_compiled(runtime)
            if self._on_python(listener.name):  # also when the compiled plane refused it
                runtime.conn_class = python_protocol(listener)
        self.gate.factories = {r.name: r.protocol_factory for r in self.runtimes}
        await self.pools.start()  # first DNS answers (bounded) before the first client
        await self.gate.start()
        if self.compiled is not None:
            self.compiled.start()
        tickets = self.contexts.tickets
        refresher = loop.create_task(self._refresh_ticket_keys()) if tickets else None
        self._report_tick()
        report_modules("worker")
        if _malloc.available():
            loop.call_later(_malloc.TRIM_SECONDS, self._trim_tick)
        await self._stop.wait()
        if refresher is not None:
            refresher.cancel()
        self.pools.stop()
        await self.drain()
        for runtime in self.runtimes:
            if runtime.rates is not None:
                runtime.rates.close()
        self.send_report()
        if self.compiled is not None:
            self.compiled.report_quiet()
            if oneloop.selects_for(loop, self.compiled.plane):
                oneloop.report(self.compiled.plane)

    def send_report(self) -> None:
        """Send one statistics snapshot to the supervisor; drop it if the pipe is full."""
        if self.report is None:
            return
        if self.compiled is not None:
            self.compiled.sync_stats()
        snap = metrics.snapshot({r.name: r.stats for r in self.runtimes}, self.backends)
        now = time.monotonic()
        snap["pools"] = self.pools.snapshot(now)
        for runtime in self.runtimes:
            up = any(pool.any_up(now) for pool in runtime.pools)
            snap["listeners"][runtime.name]["backend_up"] = int(up)
        snap["pid"] = os.getpid()
        snap["draining"] = self.stopping
        try:
            # One SOCK_SEQPACKET message per snapshot: never split, never blocks.
            self.report.send(json.dumps(snap, separators=(",", ":")).encode())
        except (BlockingIOError, InterruptedError):
            pass  # the supervisor is behind: the next snapshot supersedes this one
        except OSError:
            self.report = None  # the supervisor is gone; PDEATHSIG ends us soon

    def _report_tick(self) -> None:
        self.send_report()
        asyncio.get_running_loop().call_later(REPORT_SECONDS, self._report_tick)

    def _trim_tick(self) -> None:
        # Buffers that quiet connections freed are scattered through the heap: without
        # this, their pages would stay resident (see tunnel._malloc).
        _malloc.release_free_memory()
        asyncio.get_running_loop().call_later(_malloc.TRIM_SECONDS, self._trim_tick)

    async def _refresh_ticket_keys(self) -> None:
        """Pick up a replaced ticket_key_file without a restart (checked every few seconds)."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for store in self.contexts.tickets.values():
                store.refresh()

    def live_connections(self) -> list[ClientConnection | Passthrough]:
        """Every open client connection of this worker."""
        return [conn for runtime in self.runtimes for conn in runtime.live]

    async def drain(self) -> None:
        """Stop accepting; wait for connections up to the drain timeout; close the rest.

        The last statistics report goes out when it is done, so that the supervisor counts
        every connection this worker ended (after a reload, too).
        """
        try:
            await self._drain()
        finally:
            self.send_report()

    async def _drain(self) -> None:
        self.gate.stop()
        if self.compiled is not None:
            self.compiled.stop_accepting()
        for socks in self.sockets.values():
            for sock in socks:
                sock.close()
        # Connections the Python plane accepted up to here may not be counted yet: uvloop
        # accepts in the loop's poll phase but calls connection_made (which counts) from
        # the ready queue, where it can wait behind this step (SIGTERM handled, then a
        # connection accepted, in one iteration). Uncounted, such a connection was closed
        # unserved: by the exit when nothing else was live, or by close_early when the
        # last counted one ended first and set _stop_now. Accepting has stopped, so the
        # queue now holds every such call, and one turn of the loop (FIFO: this task
        # resumes behind them) makes the count exact, as the compiled plane's is from the
        # accept on. Only then may a count of 0 end the drain (``stopping``): a connection
        # ending during this turn must not set _stop_now with another still uncounted.
        await asyncio.sleep(0)
        self.stopping = True
        self.send_report()
        timeout = self.config.tunnel.drain_timeout
        live = self._live()
        if live:
            log.info("draining %d connection(s) for up to %.0fs", live, timeout)
            if self._live():
                try:
                    async with asyncio.timeout(timeout):
                        await self._stop_now.wait()
                except TimeoutError:
                    pass
        compiled = self.compiled
        if self.hurry:
            for conn in self.live_connections():
                conn.set_reason(CloseReason.SHUTDOWN)
                conn.transport.abort()
            if compiled is not None:
                compiled.close_all(hurry=True)
            return
        for conn in self.live_connections():
            conn.close_early(CloseReason.SHUTDOWN)
        if compiled is not None:
            compiled.close_all(hurry=False)
        if self._live():
            self._stop_now.clear()
            try:
                async with asyncio.timeout(2.0):
                    await self._stop_now.wait()
            except TimeoutError:
                for conn in self.live_connections():
                    conn.transport.abort()
                if compiled is not None:
                    compiled.close_all(hurry=True)


def run_worker(
    config: Config,
    contexts: TLSBundle,
    sockets: dict[str, list[socket.socket]],
    report: socket.socket | None = None,
    rates: RateTable | None = None,
) -> int:
    """Run one worker's event loop to completion; return its exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(config, contexts, sockets, report, rates)
    # What uvloop.run() does, which needs uvloop >= 0.18 (Debian 12 has 0.17).
    with asyncio.Runner(loop_factory=worker.new_loop) as runner:
        runner.run(worker.serve())
    return 0
