"""The supervisor's view of its workers: statistics reports, liveness, the admin endpoint.

Each worker gets one end of a ``SOCK_SEQPACKET`` socket pair at fork; it sends a JSON
statistics snapshot every second and when it starts and ends draining (see
:mod:`tunnel.dataplane.worker`). A report is also the worker's liveness signal. :class:`Observer`
keeps the latest snapshot per worker, folds the counters of exited workers into a
"retired" total (so counters never go backwards), keeps a one-minute ring of per-second
handshake-failure totals, and answers the admin endpoint's requests. It never blocks:
:meth:`Observer.poll` is the supervisor loop's only wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import time
from collections import Counter, deque
from typing import Any

from tunnel.config import Config
from tunnel.observe import metrics
from tunnel.observe.admin import AdminServer, Response
from tunnel.tls.certs import expiry_dates

log = logging.getLogger("tunnel.supervisor")

STALE_SECONDS = 5.0  # a worker silent this long is not "reporting"
MAX_REPORT = 1 << 20


def _handshake_failures(merged: dict[str, Any]) -> int:
    total = 0
    for stats in merged["listeners"].values():
        total += sum(n for k, n in stats.get("handshakes", {}).items() if k != "ok")
    return total


def _drain_channel(sock: socket.socket) -> tuple[dict[str, Any] | None, bool]:
    """Read every report waiting on ``sock``: (the newest, or None; whether it was closed)."""
    latest = None
    closed = False
    while True:
        try:
            data = sock.recv(MAX_REPORT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            data = b""
        if not data:
            closed = True  # the worker closed its end
            break
        latest = data
    if latest is None:
        return None, closed
    try:
        snap = json.loads(latest)
    except ValueError:
        log.warning("a worker sent an unreadable statistics report")
        return None, closed
    return (snap if isinstance(snap, dict) else None), closed


class Observer:
    """Worker reports, readiness and the admin endpoint of one supervisor."""

    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.reports: dict[int, socket.socket] = {}  # worker index -> our end
        self.snapshots: dict[int, dict[str, Any]] = {}
        # The old generation's workers after a reload, by pid: their channels stay open
        # while they drain, so what they count until they exit is kept (their last report
        # is retired when they are reaped).
        self.old_reports: dict[int, socket.socket] = {}
        self.old_snapshots: dict[int, dict[str, Any]] = {}
        self.heard: dict[int, float] = {}  # worker index -> time of its last report
        self.started: dict[int, float] = {}
        self.retired: dict[str, Any] = metrics.merge([])
        self.restarts = 0
        self.reloads: Counter[str] = Counter()
        self.draining = False
        self.bound = False
        self.history: deque[tuple[float, int]] = deque(maxlen=61)
        self.admin: AdminServer | None = None
        self.cert_not_after: dict[tuple[str, str], float] = {}
        self.acme: dict[str, Any] = {}  # the ACME process's last report (orders, renew_at)

    def _read_certs(self) -> None:
        self.cert_not_after = {}
        for listener in self.config.listeners:
            with contextlib.suppress(OSError, ValueError):
                for path, not_after in expiry_dates(listener):
                    self.cert_not_after[(listener.name, path)] = not_after.timestamp()

    def reconfigure(self, config: Config, workers: int) -> None:
        """After a reload: the new worker count and certificates (the admin address stays)."""
        self.config, self.workers = config, workers
        self._read_certs()

    def prepare(self) -> None:
        """Read certificate expiry dates and bind the admin endpoint (if configured)."""
        self._read_certs()
        if self.config.tunnel.admin is not None:
            self.admin = AdminServer(self.config.tunnel.admin, self.respond)

    # -- workers ------------------------------------------------------------------------
    def pair(self, index: int) -> socket.socket:
        """A new report channel for worker ``index``; returns the worker's end."""
        self.drop_channel(index)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        self.reports[index] = ours
        self.started[index] = time.monotonic()
        return theirs

    def in_child(self) -> None:
        """In a freshly forked worker: close every descriptor that belongs to the supervisor."""
        for sock in [*self.reports.values(), *self.old_reports.values()]:
            sock.close()
        if self.admin is not None:
            self.admin.listener.close()
            for client in self.admin.clients.values():
                client.sock.close()

    def drop_channel(self, index: int) -> None:
        """Close the report channel of worker ``index``."""
        sock = self.reports.pop(index, None)
        if sock is not None:
            sock.close()

    def exited(self, index: int, *, restarting: bool) -> None:
        """Worker ``index`` is gone: keep its counters, forget its gauges."""
        self._read(index)
        self.drop_channel(index)
        last = self.snapshots.pop(index, None)
        if last is not None:
            self.retired = metrics.merge([self.retired, metrics.retire(last)])
        self.heard.pop(index, None)
        if restarting:
            self.restarts += 1

    def superseded(self, index: int, pid: int) -> None:
        """Worker ``index`` (``pid``) now drains for a new generation: keep hearing it."""
        self._read(index)
        sock = self.reports.pop(index, None)
        last = self.snapshots.pop(index, None)
        self.heard.pop(index, None)
        if not pid:  # no process in the slot (awaiting a restart): nothing will drain
            if sock is not None:
                sock.close()
            if last is not None:
                self.retired = metrics.merge([self.retired, metrics.retire(last)])
            return
        if sock is not None:
            self.old_reports[pid] = sock
        if last is not None:
            self.old_snapshots[pid] = last

    def old_exited(self, pid: int) -> None:
        """A superseded worker is gone: its last report joins the retired counters."""
        sock = self.old_reports.pop(pid, None)
        if sock is not None:
            snap, _ = _drain_channel(sock)
            if snap is not None:
                self.old_snapshots[pid] = snap
            sock.close()
        last = self.old_snapshots.pop(pid, None)
        if last is not None:
            self.retired = metrics.merge([self.retired, metrics.retire(last)])

    # -- the loop's wait ------------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for reports or admin clients, and handle what is ready."""
        by_sock = {sock: index for index, sock in self.reports.items()}
        by_old = {sock: pid for pid, sock in self.old_reports.items()}
        readers: list[socket.socket] = [*by_sock, *by_old]
        writers: list[socket.socket] = []
        if self.admin is not None:
            readers += self.admin.readers()
            writers = self.admin.writers()
        try:
            ready_r, ready_w, _ = select.select(readers, writers, [], timeout)
        except InterruptedError:
            return
        for sock in ready_r:
            index = by_sock.get(sock)
            pid = by_old.get(sock)
            if index is not None:
                self._read(index)
            elif pid is not None:
                self._read_old(pid)
            elif self.admin is not None:
                self.admin.readable(sock)
        for sock in ready_w:
            if self.admin is not None:
                self.admin.writable(sock)
        if self.admin is not None:
            self.admin.expire()
        self._sample()

    def _read(self, index: int) -> None:
        sock = self.reports.get(index)
        if sock is None:
            return
        snap, closed = _drain_channel(sock)
        if closed:
            self.drop_channel(index)
        if snap is not None:
            self.snapshots[index] = snap
            self.heard[index] = time.monotonic()

    def _read_old(self, pid: int) -> None:
        sock = self.old_reports.get(pid)
        if sock is None:
            return
        snap, closed = _drain_channel(sock)
        if snap is not None:
            self.old_snapshots[pid] = snap
        if closed:
            self.old_reports.pop(pid, None)
            sock.close()

    def _sample(self) -> None:
        now = time.monotonic()
        if self.history and now - self.history[-1][0] < 1.0:
            return
        self.history.append((now, _handshake_failures(self.merged())))

    # -- what the endpoint says ----------------------------------------------------------------
    def merged(self) -> dict[str, Any]:
        """Every worker's counters, live and retired, summed."""
        live = [*self.snapshots.values(), *self.old_snapshots.values()]
        return metrics.merge([self.retired, *live])

    def reporting(self) -> int:
        """Workers that reported since they started, recently."""
        now = time.monotonic()
        return sum(
            1
            for index, when in self.heard.items()
            if index in self.reports
            and when >= self.started.get(index, 0.0)
            and now - when < STALE_SECONDS
        )

    def ready(self) -> bool:
        """Every listener bound, every worker up and reporting, not draining, and every
        listener with at least one backend up."""
        return (
            self.bound
            and not self.draining
            and self.reporting() == self.workers
            and not self.backends_down()
        )

    def backends_down(self) -> list[str]:
        """The listeners whose every backend is down (in every worker)."""
        listeners = self.merged()["listeners"]
        return sorted(n for n, s in listeners.items() if s.get("backend_up", 1) == 0)

    def failures_last_minute(self) -> int:
        """Handshake failures over (about) the last 60 seconds."""
        if not self.history:
            return 0
        now, latest = self.history[-1]
        oldest = next((n for t, n in self.history if now - t <= 60.0), latest)
        return latest - oldest

    def facts(self) -> metrics.SupervisorFacts:
        """What the supervisor adds to the workers' metrics."""
        return metrics.SupervisorFacts(
            workers_configured=self.workers,
            workers_reporting=self.reporting(),
            worker_restarts=self.restarts,
            reloads=dict(self.reloads),
            cert_not_after=dict(self.cert_not_after),
            draining=self.draining,
            handshake_failures_last_minute=self.failures_last_minute(),
            acme_orders=dict(self.acme.get("orders", {})),
            acme_renew_at=dict(self.acme.get("renew_at", {})),
        )

    def respond(self, path: str) -> Response:
        """The admin endpoint's answer for ``path``."""
        if path == "/metrics":
            body = metrics.render(self.merged(), self.facts())
            return 200, "text/plain; version=0.0.4; charset=utf-8", body
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            if self.ready():
                return 200, "text/plain", b"ready\n"
            down = self.backends_down()
            why = (
                "draining"
                if self.draining
                else f"every backend of {', '.join(down)} is down"
                if down
                else "not all workers are up and reporting"
            )
            return 503, "text/plain", f"not ready: {why}\n".encode()
        return 404, "text/plain", b"try /metrics, /healthz or /readyz\n"

    def close(self) -> None:
        """Close every channel and the admin endpoint."""
        for index in list(self.reports):
            self.drop_channel(index)
        if self.admin is not None:
            self.admin.close()
            self.admin = None
