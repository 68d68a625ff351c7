"""The supervisor's worker processes: their slots, the fork, reaping, restarts with back-off.

:class:`WorkerProcesses` is a mixin of :class:`tunnel.process.supervisor.Supervisor`. Each
worker position is a :class:`WorkerSlot`; a worker that exits is forked again after a delay
that doubles with every early death (:func:`restart_delay`), so a worker that crashes at
start does not spin. The old generation's workers (after a reload) are ``retired``: they
drain, and are killed at their deadline if they have not finished by then.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunnel._native.malloc import release_free_memory
from tunnel._native.prctl import die_with_parent
from tunnel.config import Config
from tunnel.dataplane.rates import RateTable
from tunnel.dataplane.worker import run_worker
from tunnel.observe.collector import Observer
from tunnel.process.listen import SocketPool, close_foreign
from tunnel.process.reload_status import ReloadTracker
from tunnel.tls.bundle import TLSBundle

if TYPE_CHECKING:
    from tunnel.process.acme_runner import AcmeRunner

log = logging.getLogger("tunnel.supervisor")

STABLE_SECONDS = 10.0  # a worker that lived this long starts its back-off afresh
MAX_BACKOFF = 30.0

Hook = Callable[[], None]


@dataclass(slots=True)
class WorkerSlot:
    """One worker position: its process and restart bookkeeping."""

    index: int
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


def restart_delay(failures: int) -> float:
    """How long to wait before forking a worker that died ``failures`` times in a row early."""
    return min(MAX_BACKOFF, 0.1 * (2**failures)) if failures else 0.0


class WorkerProcesses:
    """Mixin: fork, signal, reap and restart the workers (the supervisor holds the state)."""

    # Set by the supervisor.
    config: Config
    contexts: TLSBundle
    pool: SocketPool
    workers: int
    slots: list[WorkerSlot]
    retired: dict[int, float]  # old generation's workers: pid -> kill deadline
    generation: int
    stopping: bool
    after_fork: list[Hook]
    observer: Observer
    rates: RateTable
    tracker: ReloadTracker
    acme: AcmeRunner | None

    def _in_other_child(self) -> None:
        """In a child that is not a worker (the ACME process): drop the supervisor's fds."""
        for hook in self.after_fork:
            hook()
        self.observer.in_child()
        self.pool.close_all()

    def _fork_generation(self) -> None:
        """Fork a worker for every slot: a new generation (at start, or a reload)."""
        # Garbage cycles of the previous generation (its configuration, its TLS contexts)
        # are collected now, before what is alive is frozen by the forks below.
        gc.unfreeze()
        gc.collect()
        # The whole free pages of the C heap (start-up's and that collection's garbage) go
        # back to the kernel before the fork rather than into every process's image, where
        # the first malloc of any process would copy them: -0.2 MB of anonymous PSS for
        # the supervisor and one worker (bench/footprint.py), well under 1 ms.
        release_free_memory()
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        report = self.observer.pair(slot.index)
        # Everything alive goes to the collector's permanent generation, which it never
        # scans: a full collection in a worker (or in the supervisor) would otherwise
        # write to the header of every object inherited at the fork and so copy nearly
        # every page the processes share (CPython 3.11). Measured after 1,500
        # connections: -0.6 MB of anonymous PSS for the supervisor and one worker.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # Until the worker's own handler exists, a forwarded SIGUSR1 must not kill it.
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                die_with_parent()
                for hook in self.after_fork:
                    hook()
                self.observer.in_child()
                close_foreign(self.pool, self.config, slot.index, self.workers)
                mine = self.pool.for_worker(self.config, slot.index, self.workers)
                code = run_worker(self.config, self.contexts, mine, report, self.rates)
            except BaseException:
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(code)
        report.close()
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d), generation %d", slot.index, pid, self.generation)

    def _restart_due(self, now: float) -> None:
        """Fork again the workers whose back-off is over."""
        for slot in self.slots:
            if not slot.pid and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)

    def _kill_all(self, signo: int, *, retired: bool = False) -> None:
        pids = [slot.pid for slot in self.slots if slot.pid]
        if retired:
            pids += list(self.retired)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signo)

    def _kill_overdue(self, now: float) -> None:
        for pid, deadline in self.retired.items():
            if now > deadline:
                log.warning("old worker (pid %d) did not drain in time: killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.acme is not None and self.acme.reaped(pid, stopping=self.stopping):
                continue
            if self.retired.pop(pid, None) is not None:
                self.observer.old_exited(pid)
                log.info("old worker (pid %d) finished draining", pid)
                continue
            for slot in self.slots:
                if slot.pid == pid:
                    self._worker_exited(slot, status)

    def _worker_exited(self, slot: WorkerSlot, status: int) -> None:
        pid, slot.pid = slot.pid, 0
        self.observer.exited(slot.index, restarting=not self.stopping)
        if self.stopping:
            return
        how = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exited with status {os.waitstatus_to_exitcode(status)}"
        )
        lived = time.monotonic() - slot.started
        slot.failures = 0 if lived > STABLE_SECONDS else slot.failures + 1
        delay = restart_delay(slot.failures)
        slot.restart_at = time.monotonic() + delay
        log.error("worker %d (pid %d) %s; restarting in %.1fs", slot.index, pid, how, delay)
        self.tracker.worker_died(slot.index, how)
