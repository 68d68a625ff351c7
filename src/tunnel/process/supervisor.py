"""The supervisor: bind, build TLS contexts, fork workers, restart them, stop them.

Theory of operation
-------------------
Everything that can fail because of the configuration happens here, before any worker
exists: every certificate is loaded into its ``SSLContext`` and every listening socket is
bound, so a mistake ends ``tunnel run`` with a clear message and exit code 2 rather than
a crash loop. Each listener address gets one ``SO_REUSEPORT`` socket per worker; the
kernel spreads new connections over them, and since the supervisor keeps every socket
open, connections queued for a worker that dies wait for its replacement.

The TLS contexts are built before ``fork()``, so all workers share the same session
ticket keys and a client resumes its session whichever worker it lands on.

Signals are never handled asynchronously here: they are blocked, and the main loop
collects them with ``sigtimedwait`` (SIGCHLD included); handling a signal only records
it, and the loop acts on what was recorded.

Reload (SIGHUP, or a watched certificate file changing) is a transaction: the new
configuration is parsed, every TLS context built and every new address bound first; any
error leaves the running generation of workers untouched. Otherwise a new generation is
forked with the new configuration (reusing the already-bound sockets of unchanged
addresses, see :mod:`tunnel.process.listen`), and only then is the old generation told to drain
(SIGTERM: stop accepting, finish open connections up to its ``drain_timeout``). A new
generation has new TLS contexts and therefore new session-ticket keys, unless the
listener's keys come from a ``ticket_key_file``.

The reload transaction lives in :mod:`tunnel.process.reload`; forking, reaping and
restarting workers (with back-off) in :mod:`tunnel.process.workers`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnel.config import Address, Config
from tunnel.dataplane.rates import RateTable
from tunnel.dataplane.worker import import_python_plane
from tunnel.errors import ConfigError, ConfigErrors, TunnelError
from tunnel.observe.collector import Observer
from tunnel.observe.log import reopen_logs
from tunnel.observe.modules import report_modules
from tunnel.process.generation import build_contexts, worker_count
from tunnel.process.listen import SocketPool
from tunnel.process.reload import Reloads, runner_for
from tunnel.process.reload_status import ReloadTracker
from tunnel.process.watch import CertWatch
from tunnel.process.workers import Hook, WorkerSlot
from tunnel.tls.bundle import TLSBundle

if TYPE_CHECKING:
    from tunnel.process.acme_runner import AcmeRunner

log = logging.getLogger("tunnel.supervisor")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD}
_POLL_SECONDS = 0.2


def _admin_error(config: Config, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot serve the admin endpoint on {config.tunnel.admin}: {exc.strerror or exc}",
        file=config.path,
        section="tunnel",
        key="admin",
        hint="pick a free host:port, or delete the line to turn the endpoint off",
    )


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one (each connection needs two fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Supervisor(Reloads):
    """Owns the listening sockets and the worker processes.

    ``log_level`` is the command line's override of ``log_level`` (kept across reloads).
    ``notify`` receives service-manager state lines (``READY=1`` ...); ``before_workers``
    runs once after everything is bound and loaded, before the first worker is forked
    (the place to drop privileges); ``on_ready`` runs once the first workers exist.
    """

    def __init__(
        self,
        config: Config,
        *,
        log_level: str | None = None,
        inherited: dict[Address, socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.log_level = log_level
        self.workers = worker_count(config)
        self.contexts = TLSBundle()
        self.pool = SocketPool(inherited)
        self.slots = [WorkerSlot(i) for i in range(self.workers)]
        self.retired: dict[int, float] = {}  # old generation's workers: pid -> kill deadline
        self.generation = 1
        self.stopping = False
        self.drain_at: float | None = None  # shutdown_delay: when the drain begins
        self.deadline = 0.0
        self.reload_requested = False
        self.reopen_requested = False
        self.watch = CertWatch()
        self.notify: Callable[[str], object] = lambda _state: None
        self.before_workers: list[Hook] = []
        self.on_ready: list[Hook] = []
        # Run in every worker right after fork, to close what only the supervisor may hold.
        # Hooks rather than descriptor numbers: a number closed in the supervisor is soon
        # reused (by a report channel or a socket), and closing it again in a worker would
        # close that instead.
        self.after_fork: list[Hook] = []
        self.observer = Observer(config, self.workers)
        # Per-IP rate buckets shared by every worker, of every generation (a reload keeps
        # them): mapped here, before any fork. Keyed by listener and address.
        self.rates = RateTable()
        self.tracker = ReloadTracker(lambda _status: None)  # the outcome, for `tunnel reload`
        self.acme: AcmeRunner | None = None  # the ACME process, with [acme] and acme names

    def prepare(self) -> None:
        """Load certificates and bind sockets; raise ConfigErrors on any problem."""
        raise_fd_limit()
        self.contexts = build_contexts(self.config)
        # Here, before before_workers drops privileges: the user dropped to may not be able
        # to read the site-packages uvloop lives in.
        import_python_plane(self.config)
        self.pool.commit(self.pool.plan(self.config, self.workers))
        try:
            self.observer.prepare()
        except OSError as exc:
            self.pool.close_all()
            raise ConfigErrors([_admin_error(self.config, exc)]) from None
        self.observer.bound = True
        try:
            self.acme = runner_for(self.config)
        except ConfigErrors:
            self.pool.close_all()
            raise
        if self.acme is not None:
            self.after_fork.append(self.acme.close_in_worker)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT and every worker has drained; return the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for hook in self.before_workers:
                hook()
            self._log_listeners()
            self._fork_generation()
            if self.acme is not None:
                self.acme.start(self._in_other_child)
            self.watch.reset(self.config)
            log.info("tunnel started: %d worker(s), pid %d", self.workers, os.getpid())
            for hook in self.on_ready:
                hook()
            report_modules("supervisor")
            self.notify(f"READY=1\nSTATUS=serving, {self.workers} worker(s)\nMAINPID={os.getpid()}")
            return self._loop()
        finally:
            self._kill_all(signal.SIGKILL, retired=True)
            if self.acme is not None:
                self.acme.close()
            self.pool.close_all()
            self.observer.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _loop(self) -> int:
        while True:
            # Signals stay blocked; the wait is for worker reports and admin clients,
            # and pending signals are collected right after it.
            self.observer.poll(_POLL_SECONDS)
            self.tracker.poll(self.observer.reporting() == self.workers)
            info = signal.sigtimedwait(_SIGNALS, 0)
            if info is not None:
                self._on_signal(info.si_signo)
            self._reap()
            now = time.monotonic()
            self._kill_overdue(now)
            if self.reopen_requested:
                self.reopen_requested = False
                reopen_logs()
                self._kill_all(signal.SIGUSR1, retired=True)
                if self.acme is not None:
                    self.acme.send_signal(signal.SIGUSR1)
            if self.stopping:
                if self.drain_at is not None and now >= self.drain_at:
                    self._begin_drain()
                if not any(slot.pid for slot in self.slots) and not self.retired:
                    log.info("tunnel stopped")
                    return 0
                if now > self.deadline:
                    log.warning("workers did not stop in time: killing them")
                    self._kill_all(signal.SIGKILL, retired=True)
                continue
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            elif self.watch.due(now):
                self._watch_poll()
            self._restart_due(now)
            if self.acme is not None:
                self.acme.poll(now, self._in_other_child)
                self.observer.acme = self.acme.facts

    def _on_signal(self, signo: int) -> None:
        # Only record or forward here; reloads and restarts happen in the loop.
        if signo in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                self._begin_stop()
            elif self.drain_at is not None:
                log.info("second stop signal: draining now")
                self._begin_drain()
            else:
                log.info("second stop signal: closing all connections now")
                self._kill_all(signal.SIGTERM, retired=True)
        elif signo == signal.SIGHUP:
            self.reload_requested = True
        elif signo == signal.SIGUSR1:
            self.reopen_requested = True

    def _begin_stop(self) -> None:
        self.stopping = True
        if self.acme is not None:
            self.acme.stop()  # no new orders (nor reload requests) while stopping
        self.observer.draining = True  # /readyz answers 503 from now on
        self.notify("STOPPING=1\nSTATUS=draining")
        delay = self.config.tunnel.shutdown_delay
        if delay > 0:
            # Keep accepting while balancers notice /readyz and stop sending traffic.
            log.info("stop signal: unready now; draining in %.0fs", delay)
            self.drain_at = time.monotonic() + delay
            self.deadline = self.drain_at + self.config.tunnel.drain_timeout + 5.0
        else:
            self._begin_drain()

    def _begin_drain(self) -> None:
        self.drain_at = None
        log.info("stop signal: draining (up to %.0fs)", self.config.tunnel.drain_timeout)
        self.deadline = time.monotonic() + self.config.tunnel.drain_timeout + 5.0
        self.deadline = max([self.deadline, *self.retired.values()])
        # Old-generation workers are draining already; a SIGTERM would hurry them.
        self._kill_all(signal.SIGTERM)
        # Workers close their copies when they start draining; once ours are closed
        # too, new connections are refused at once (a balancer fails over) instead
        # of waiting in a backlog nobody accepts from.
        self.pool.close_all()


def run(config: Config, *, log_level: str | None = None) -> int:
    """Prepare and run a supervisor (raises ConfigErrors/TunnelError before serving)."""
    supervisor = Supervisor(config, log_level=log_level)
    try:
        supervisor.prepare()
    except OSError as exc:
        raise TunnelError(f"cannot start: {exc}") from exc
    return supervisor.run()
