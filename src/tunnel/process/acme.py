"""The ACME process: obtains and renews the listeners' ``acme`` certificates.

A child of the supervisor, forked after privileges are dropped (so every file it writes
belongs to the serving user). It loops: for each certificate (one per listener name list)
it decides from the stored certificate when to order (:mod:`tunnel.tls.acme.renewal`),
orders under the state directory's lock, and writes the result. Whenever a certificate
file changes (its own order, or another instance of a fleet sharing ``state_dir``), it
asks the supervisor for a reload (SIGHUP): the new generation of workers serves the new
certificate, without a restart. A failed order leaves the stored certificate in place
and is retried with back-off. With ``challenge = http-01`` it also runs the responder on
``http_port`` (a socket the supervisor bound before dropping privileges).
The supervisor's side (start, restart, reports) is :mod:`tunnel.process.acme_runner`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunnel.config import Config
from tunnel.config.acme import AcmeSettings
from tunnel.process.acme_http import serve_http01
from tunnel.tls.acme.renewal import Validity, next_wake, renew_at, retry_delay
from tunnel.tls.acme.store import StateDir, read_stored, write_private

log = logging.getLogger("tunnel.acme")

POLL_SECONDS = 2.0  # how often a certificate file is looked at (fleet pick-up)


def managed_names(config: Config) -> tuple[tuple[str, ...], ...]:
    """Every distinct name list of the listeners (one certificate each), in order."""
    seen: list[tuple[str, ...]] = []
    for listener in config.listeners:
        if listener.acme and listener.acme not in seen:
            seen.append(listener.acme)
    return tuple(seen)


@dataclass(slots=True)
class Managed:
    """One certificate the ACME process keeps valid."""

    names: tuple[str, ...]
    path: str
    failures: int = 0
    retry_at: float = 0.0
    seen: tuple[int, int] | None = None  # (inode, mtime_ns) of the file last served

    def identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def due(self, settings: AcmeSettings) -> float:
        stored = read_stored(self.path)
        if stored is None or set(stored.names) != set(self.names):
            return 0.0
        validity = Validity(stored.not_before.timestamp(), stored.not_after.timestamp())
        return renew_at(validity, settings.renew_before)


def describe(cert: Managed, settings: AcmeSettings) -> str:
    """One line about a managed certificate: valid until when, renewed when."""
    stored = read_stored(cert.path)
    names = ", ".join(cert.names)
    if stored is None:
        return f"{names}: no certificate yet"
    due = cert.due(settings)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(due))
    return f"{names}: valid until {stored.not_after:%Y-%m-%d %H:%M:%S}, renewal at {when} UTC"


def acme_summary(settings: AcmeSettings) -> str:
    """What ``tunnel check`` says about the [acme] section."""
    return (
        f"  acme: {settings.directory}; challenge {settings.challenge}"
        + (f" (http_port {settings.http_port})" if settings.challenge == "http-01" else "")
        + f"; state_dir {settings.state_dir}"
    )


def acme_listener_line(names: tuple[str, ...], settings: AcmeSettings) -> str:
    """What ``tunnel check`` says about a listener's managed names."""
    cert = Managed(names, StateDir(settings.state_dir).cert(names))
    return "acme (managed) " + describe(cert, settings).replace(
        "no certificate yet", "no certificate yet: a self-signed placeholder until obtained"
    )


Order = Callable[[tuple[str, ...]], bytes]


@dataclass(slots=True)
class Renewer:
    """The loop's state and one step of it (the ordering function is injected)."""

    settings: AcmeSettings
    certs: list[Managed]
    order: Order
    reload: Callable[[], None]
    clock: Callable[[], float] = time.time
    orders: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    report: Callable[[dict[str, Any]], None] = lambda _facts: None

    def step(self) -> float:
        """Order what is due, reload on any change; return the seconds to sleep."""
        changed = False
        wake = POLL_SECONDS
        for cert in self.certs:
            now = self.clock()
            due = max(cert.due(self.settings), cert.retry_at)
            if now >= due:
                self._try(cert)
                due = max(cert.due(self.settings), cert.retry_at)
            identity = cert.identity()
            if identity != cert.seen:
                changed = changed or cert.seen is not None or identity is not None
                cert.seen = identity
            wake = min(wake, next_wake(self.clock(), due, poll=POLL_SECONDS))
        if changed:
            self.reload()
        self.report(self.facts())
        return wake

    def facts(self) -> dict[str, Any]:
        """Orders by result and each certificate's next order time, for the metrics."""
        renew_at = {
            ",".join(cert.names): max(cert.due(self.settings), cert.retry_at) for cert in self.certs
        }
        return {"orders": dict(self.orders), "renew_at": renew_at}

    def _try(self, cert: Managed) -> None:
        state = StateDir(self.settings.state_dir)
        os.makedirs(state.root, mode=0o700, exist_ok=True)
        with open(state.lock, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another instance orders; its result is picked up by the file poll.
                cert.retry_at = self.clock() + POLL_SECONDS
                return
            # Under the lock: another instance may have renewed while we waited.
            if self.clock() < cert.due(self.settings):
                return
            self._order(cert)

    def _order(self, cert: Managed) -> None:
        names = ", ".join(cert.names)
        log.info("acme: ordering a certificate for %s", names)
        started = time.monotonic()
        try:
            pem = self.order(cert.names)
        except Exception as exc:
            cert.failures += 1
            delay = retry_delay(cert.failures, getattr(exc, "retry_after", None))
            cert.retry_at = self.clock() + delay
            self.orders["failed"] += 1
            log.warning(
                "acme: order for %s failed: %s; keeping the current certificate, retrying in %.0fs",
                names,
                exc,
                delay,
            )
            return
        write_private(cert.path, pem)
        cert.failures, cert.retry_at = 0, 0.0
        self.orders["ok"] += 1
        log.info(
            "acme: certificate for %s obtained in %.1fs",
            names,
            time.monotonic() - started,
        )


def _sender(channel: socket.socket | None) -> Callable[[dict[str, Any]], None]:
    last: list[bytes] = [b""]

    def send(facts: dict[str, Any]) -> None:
        data = json.dumps(facts, sort_keys=True).encode()
        if channel is None or data == last[0]:
            return
        last[0] = data
        with contextlib.suppress(OSError):  # a full or closed channel: the next step resends
            channel.send(data)

    return send


def run_acme(
    config: Config, http_socket: socket.socket | None, channel: socket.socket | None = None
) -> int:
    """The ACME process's main function (never returns until killed)."""
    from tunnel.process.acme_client import AcmeClient

    settings = config.acme
    assert settings is not None
    state = StateDir(settings.state_dir)
    if http_socket is not None:
        serve_http01(http_socket, state)
    parent = os.getppid()
    certs = [Managed(names, state.cert(names)) for names in managed_names(config)]
    for cert in certs:
        cert.seen = cert.identity()  # what the supervisor loaded for this generation
        log.info("acme: %s", describe(cert, settings))
    renewer = Renewer(
        settings,
        certs,
        AcmeClient(settings).order,
        lambda: os.kill(parent, signal.SIGHUP),
        report=_sender(channel),
    )
    while True:
        time.sleep(renewer.step())
