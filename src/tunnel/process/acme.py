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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from tunnel._native.prctl import die_with_parent
from tunnel.config import Config
from tunnel.config.acme import AcmeSettings
from tunnel.errors import ConfigError, ConfigErrors
from tunnel.observe.log import reopen_logs
from tunnel.tls.acme.renewal import Validity, next_wake, renew_at, retry_delay
from tunnel.tls.acme.store import StateDir, read_stored, write_private

log = logging.getLogger("tunnel.acme")

RESTART_DELAY = 5.0
POLL_SECONDS = 2.0  # how often a certificate file is looked at (fleet pick-up)
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


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


class _ChallengeHandler(BaseHTTPRequestHandler):
    """HTTP-01: the key authorization under /.well-known/acme-challenge/, 404 elsewhere."""

    state: StateDir
    server_version = "tunnel"

    def do_GET(self) -> None:
        body = self._lookup()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _lookup(self) -> bytes | None:
        if not self.path.startswith(CHALLENGE_PREFIX):
            return None
        path = self.state.http_challenge(self.path[len(CHALLENGE_PREFIX) :])
        if path is None:
            return None
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except OSError:
            return None

    def log_message(self, format: str, *args: object) -> None:
        log.info("http-01 responder: %s %s", self.address_string(), format % args)


def serve_http01(sock: socket.socket, state: StateDir) -> HTTPServer:
    """Answer HTTP-01 challenges on the bound ``sock`` from a daemon thread."""
    handler = type("Handler", (_ChallengeHandler,), {"state": state})
    server = HTTPServer(sock.getsockname()[:2], handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    threading.Thread(target=server.serve_forever, name="http-01", daemon=True).start()
    return server


def runner_for(config: Config) -> AcmeRunner | None:
    """The ACME process handle when the configuration manages certificates; binds http_port.

    Raises OSError when http_port cannot be bound, ConfigErrors without the acme packages.
    """
    if config.acme is None or not managed_names(config):
        return None
    try:
        import acme  # noqa: F401 - only to fail at start rather than in the ACME process
        import josepy  # noqa: F401
    except ImportError as exc:
        raise ConfigErrors(
            [
                ConfigError(
                    f"[acme] needs the Python package {exc.name!r}, which is not installed",
                    file=config.path,
                    section="acme",
                    hint="pip install 'tunnel[acme]' (the acme and josepy packages)",
                )
            ]
        ) from None
    sock = bind_http01(config.acme) if config.acme.challenge == "http-01" else None
    return AcmeRunner(config, sock)


def bind_http01(settings: AcmeSettings) -> socket.socket:
    """The HTTP-01 responder's listening socket on every interface (bound as root)."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(
            ("", settings.http_port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=True
        )
    # reuse_port: instances of a fleet on one machine all answer from the shared state_dir.
    return socket.create_server(("", settings.http_port), reuse_port=True)


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


@dataclass(slots=True)
class AcmeRunner:
    """The supervisor's handle on the ACME process: start, restart, stop."""

    config: Config
    http_socket: socket.socket | None = None
    pid: int = 0
    restart_at: float | None = None
    channel: socket.socket | None = None  # the ACME process's reports (datagrams of JSON)
    facts: dict[str, Any] = field(default_factory=dict)
    is_child: bool = False  # True in the ACME process itself

    def reconfigure(self, config: Config, in_child: Callable[[], None]) -> None:
        """After a reload: restart the process if what it manages changed."""
        old, old_names = self.config.acme, managed_names(self.config)
        self.config = config
        if (old, old_names) == (config.acme, managed_names(config)) and self.pid:
            return
        new_port = config.acme.http_port if config.acme else None
        if old is not None and self.http_socket is not None and old.http_port != new_port:
            log.warning("acme: a new http_port takes effect at the next restart")
        self.stop()
        if config.acme is not None and managed_names(config):
            self.start(in_child)

    def reaped(self, pid: int, *, stopping: bool) -> bool:
        """True if ``pid`` was the ACME process (restarted a little later unless stopping)."""
        if not pid or pid != self.pid:
            return False
        self.pid = 0
        if not stopping:
            log.error("acme process (pid %d) exited; restarting in %.0fs", pid, RESTART_DELAY)
            self.restart_at = time.monotonic() + RESTART_DELAY
        return True

    def poll(self, now: float, in_child: Callable[[], None]) -> None:
        """Read the process's reports; restart it when its delay is over."""
        while self.channel is not None:
            try:
                data = self.channel.recv(65536)
            except OSError:  # nothing more (BlockingIOError), or the process is gone
                break
            with contextlib.suppress(ValueError):
                self.facts = json.loads(data)
        if self.restart_at is not None and now >= self.restart_at:
            self.start(in_child)

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def start(self, in_child: Callable[[], None]) -> None:
        """Fork the ACME process; ``in_child`` closes what only the supervisor may hold."""
        self._close_channel()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        theirs.setblocking(False)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # SIGTERM ends it (the default); a reload is the supervisor's business; SIGUSR1
                # reopens the log file like the workers do.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGUSR1, lambda _signo, _frame: reopen_logs())
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                die_with_parent()
                ours.close()
                self.is_child = True
                in_child()
                code = run_acme(self.config, self.http_socket, theirs)
            except BaseException:
                log.exception("acme process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        self.channel = ours
        self.pid = pid
        self.restart_at = None
        log.info(
            "acme process started (pid %d) for %d certificate(s)",
            pid,
            len(managed_names(self.config)),
        )

    def send_signal(self, signo: int) -> None:
        """Send ``signo`` to the ACME process, if it runs."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signo)

    def stop(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self.pid = 0

    def close_in_worker(self) -> None:
        """In a worker after fork: drop the supervisor's ACME channel and HTTP-01 socket."""
        if self.is_child:
            return
        self._close_channel()
        if self.http_socket is not None:
            self.http_socket.close()

    def close(self) -> None:
        self.stop()
        self._close_channel()
        if self.http_socket is not None:
            self.http_socket.close()
            self.http_socket = None
