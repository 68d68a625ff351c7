"""Reload: a new generation of workers from a re-read configuration, or none at all.

:class:`Reloads` is a mixin of :class:`tunnel.process.supervisor.Supervisor`. A reload
(SIGHUP, ``tunnel reload``, or a watched certificate file changing) is a transaction: the
configuration is parsed, every new address bound and every TLS context built first; any
error leaves the running generation serving and is logged (and reported to ``tunnel
reload`` through the :class:`tunnel.process.reload_status.ReloadTracker`). Otherwise the
new generation is forked, and only then is the old one told to drain; its workers become
``retired`` until they exit or their deadline passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnel.config import Config, load_config
from tunnel.dataplane import plane
from tunnel.dataplane.worker import import_python_plane
from tunnel.errors import ConfigErrors, TunnelError
from tunnel.process.generation import apply_logging, build_contexts, destination, worker_count
from tunnel.process.listen import bound_address
from tunnel.process.watch import CertWatch
from tunnel.process.workers import WorkerProcesses, WorkerSlot

if TYPE_CHECKING:
    from tunnel.process.acme_runner import AcmeRunner

log = logging.getLogger("tunnel.supervisor")


def runner_for(config: Config) -> AcmeRunner | None:
    """The ACME process handle, or None (see :func:`tunnel.process.acme_runner.runner_for`).

    The ACME code (and ``cryptography``, ``http.server``) is imported only with an
    ``[acme]`` section: without one, serving processes never carry it.
    """
    if config.acme is None:
        return None
    from tunnel.process import acme_runner

    return acme_runner.runner_for(config)


class Reloads(WorkerProcesses):
    """Mixin: reload the configuration into a new generation of workers."""

    # Set by the supervisor.
    log_level: str | None
    watch: CertWatch
    notify: Callable[[str], object]

    def _log_listeners(self) -> None:
        # The addresses actually bound: where ``accept`` says port 0, this line is the
        # one place that tells which port the kernel chose.
        for listener in self.config.listeners:
            log.info(
                "listener %s: %s -> %s",
                listener.name,
                ", ".join(str(bound_address(self.pool.bound[a][0])) for a in listener.accept),
                destination(listener),
            )
        admin = self.observer.admin
        if admin is not None:
            log.info("admin endpoint: %s", bound_address(admin.listener))
        self._log_planes()

    def _log_planes(self) -> None:
        """Which data plane serves each listener: once per generation, not once per worker.

        The workers make the same choice (same configuration, same environment); the
        extension loaded here is inherited by the workers forked next.
        """
        setting = self.config.tunnel.dataplane
        module, why = plane.load(setting)
        if module is None:
            level = logging.WARNING if plane.worth_a_warning(setting) else logging.INFO
            log.log(level, "data plane: python for every listener (%s)", why)
            return
        backends = {backend.name: backend for backend in self.config.backends}
        for listener in self.config.listeners:
            chosen, why = plane.choose(listener, backends, setting)
            log.info("listener %s: %s data plane%s", listener.name, chosen, f" ({why})" * bool(why))

    def reload(self) -> bool:
        """Re-read the configuration and certificates; switch generations if all is well.

        A transaction: the new TLS contexts are built and the new sockets bound first; on
        any error the running generation keeps serving and the error is logged.
        """
        self.tracker.begin()
        path = self.config.path
        if path.startswith("<"):
            log.warning("reload: %s has no configuration file to re-read; ignored", path)
            self.tracker.failed(f"{path} has no configuration file to re-read")
            return False
        self.notify(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )
        log.info("reload: reading %s", path)
        try:
            config = load_config(path)
            workers = worker_count(config)
            # Before anything is committed: a listener moved to the Python plane needs its
            # relay and uvloop, imported now as the user privileges were dropped to.
            import_python_plane(config)
            planned = self.pool.plan(config, workers)
        except ConfigErrors as exc:
            return self._reload_failed([str(e) for e in exc.errors])
        except (TunnelError, OSError, ImportError) as exc:
            return self._reload_failed([str(exc)])
        try:
            # Last: the new generation's contexts (ticket key stores carried over).
            contexts = build_contexts(config, self.contexts)
        except (ConfigErrors, TunnelError, OSError) as exc:
            self.pool.discard(planned)
            errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
            return self._reload_failed([str(e) for e in errors])
        old_pids = [slot.pid for slot in self.slots if slot.pid]
        kill_at = time.monotonic() + self.config.tunnel.drain_timeout + 5.0
        apply_logging(self.config, config, self.log_level)
        self.pool.commit(planned)
        self.config, self.contexts, self.workers = config, contexts, workers
        self.generation += 1
        for slot in self.slots:
            # It drains now: its channel stays open until it exits, so what it counts
            # meanwhile (and the report it sends when done) is kept.
            self.observer.superseded(slot.index, slot.pid)
        self.observer.reconfigure(config, workers)
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self._log_listeners()
        # The new generation starts before the old one stops accepting; the sockets of
        # unchanged addresses are the same, so a connection arriving in between waits
        # in the backlog for whichever worker accepts first.
        self._fork_generation()
        for pid in old_pids:
            self.retired[pid] = kill_at
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.watch.reset(self.config)
        if self.acme is not None:
            self.acme.reconfigure(config, self._in_other_child)
        else:
            self._first_acme(config)
        log.info(
            "reload: generation %d serving with %d worker(s); %d old worker(s) draining",
            self.generation,
            workers,
            len(old_pids),
        )
        self.notify(f"READY=1\nSTATUS=serving, generation {self.generation}")
        self.observer.reloads["ok"] += 1
        self.tracker.forked(self.generation)
        return True

    def _first_acme(self, config: Config) -> None:
        """A reload that brings the first acme names: start the ACME process now."""
        try:
            self.acme = runner_for(config)
        except ConfigErrors as exc:
            log.error("reload: %s; restart Tunnel once it is fixed", exc.errors[0])
            return
        if self.acme is not None:
            self.after_fork.append(self.acme.close_in_worker)
            self.acme.start(self._in_other_child)

    def _reload_failed(self, problems: list[str]) -> bool:
        self.observer.reloads["failed"] += 1
        for problem in problems:
            log.error("reload failed: %s", problem)
        log.error("reload failed: still serving the previous configuration")
        self.tracker.failed("\n".join([*problems, "still serving the previous configuration"]))
        self.notify(f"READY=1\nSTATUS=reload failed: {problems[0]}")
        return False

    def _watch_poll(self) -> None:
        moved = self.watch.poll()
        if moved:
            log.info("watch: %s changed; reloading", ", ".join(moved))
            self.reload()
