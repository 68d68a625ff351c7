"""The supervisor's side of the ACME process: start it, restart it, read its reports.

Kept apart from the supervisor so that its part of the main loop stays a few calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunnel._native.prctl import die_with_parent
from tunnel.config import Config
from tunnel.errors import ConfigError, ConfigErrors
from tunnel.observe.log import reopen_logs
from tunnel.process import privileges
from tunnel.process.acme import managed_names, run_acme
from tunnel.process.acme_http import bind_http01

log = logging.getLogger("tunnel.acme")

RESTART_DELAY = 5.0


def runner_for(config: Config) -> AcmeRunner | None:
    """The ACME process handle when the configuration manages certificates; binds http_port.

    Raises ConfigErrors when http_port cannot be bound or the acme packages are missing.
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
    own_state_dir(config.acme.state_dir, privileges.resolve(config))
    sock = None
    if config.acme.challenge == "http-01":
        try:
            sock = bind_http01(config.acme)
        except OSError as exc:
            raise ConfigErrors([_port_error(config, exc)]) from None
    return AcmeRunner(config, sock)


def own_state_dir(path: str, identity: privileges.Identity | None) -> None:
    """As root, before privileges are dropped: make ``state_dir`` (0700) the serving user's.

    The ACME process runs as that user and writes everything there; files an earlier run
    as root left behind are handed over too. Problems are logged: the ACME process then
    says what it cannot write.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if identity is None or identity.uid == 0 or os.geteuid() != 0:
            return
        os.chown(path, identity.uid, identity.gid)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(
                    os.path.join(root, name), identity.uid, identity.gid, follow_symlinks=False
                )
    except OSError as exc:
        log.warning("acme: cannot prepare state_dir %s: %s", path, exc.strerror or exc)


def _port_error(config: Config, exc: OSError) -> ConfigError:
    port = config.acme.http_port if config.acme else 0
    return ConfigError(
        f"cannot answer HTTP-01 challenges on port {port}: {exc.strerror or exc}",
        file=config.path,
        section="acme",
        key="http_port",
        hint="free the port, pick another http_port, or use challenge = tls-alpn-01",
    )


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
