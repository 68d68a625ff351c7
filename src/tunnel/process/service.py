"""``tunnel run`` as a service: pid file, privileges, daemon mode, systemd integration.

The order matters and is the point of this module:

1. refuse root early, and files the dropped-to user could not re-read on reload
   (configuration errors, before anything is bound);
2. claim the pid file (a running Tunnel is reported as such, not as "address in use");
3. load certificates and bind (sockets from systemd socket activation are adopted);
4. detach if ``daemon = yes`` (the terminal still gets start-up errors and exit codes);
5. in the supervisor, before any worker: write the pid file, then drop privileges;
6. workers start; the daemon reports success and systemd gets ``READY=1``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable

from tunnel.config import Address, Config
from tunnel.errors import ConfigErrors, TunnelError
from tunnel.process import privileges, readable, sd_notify
from tunnel.process.daemon import Reporter, daemonize
from tunnel.process.pidfile import PidFile
from tunnel.process.reload_status import StatusFile, status_path
from tunnel.process.supervisor import Supervisor

log = logging.getLogger("tunnel.service")


class StartFailed(TunnelError):
    """The daemon could not start; ``code`` is the exit code it reported."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _host_key(host: str) -> str:
    return host.lower().removeprefix("::ffff:")


def adopt_activated(config: Config, socks: list[socket.socket]) -> dict[Address, socket.socket]:
    """Match systemd's listening sockets to ``accept`` addresses; close the rest."""
    wanted = {
        (_host_key(addr.host), addr.port): addr
        for listener in config.listeners
        for addr in listener.accept
    }
    adopted: dict[Address, socket.socket] = {}
    for sock in socks:
        try:
            host, port = sock.getsockname()[:2]
        except (OSError, ValueError):
            host, port = "?", 0
        addr = wanted.get((_host_key(str(host)), int(port)))
        if addr is None:
            log.warning("socket activation: no listener accepts on %s:%s; closing it", host, port)
            sock.close()
            continue
        sock.setblocking(False)
        adopted[addr] = sock
        log.info("socket activation: using the socket passed for %s (fd %d)", addr, sock.fileno())
    return adopted


def _pid_file_hook(runner: Supervisor, pidfile: PidFile, status: list[StatusFile]) -> None:
    pidfile.write()
    runner.after_fork.append(pidfile.close_in_child)  # workers must not keep the lock alive
    # Beside the pid file, and opened before privileges are dropped (see reload_status).
    try:
        status.append(StatusFile(status_path(pidfile.path)))
    except OSError as exc:
        log.warning(
            "cannot create %s (%s): 'tunnel reload' will not see reload outcomes",
            status_path(pidfile.path),
            exc.strerror,
        )
        return
    runner.tracker.publish = status[0].write
    runner.after_fork.append(status[0].close_in_child)
    status[0].write(runner.tracker.status)


def _drop_hook(identity: privileges.Identity, settings_user: str | None) -> None:
    try:
        privileges.drop(identity)
    except OSError as exc:
        who = settings_user or f"uid {identity.uid}"
        raise TunnelError(f"cannot switch to {who} (gid {identity.gid}): {exc}") from None
    log.info("running as uid %d, gid %d", os.getuid(), os.getgid())


def run_service(
    config: Config,
    *,
    log_level: str | None = None,
    daemon: bool = False,
    announce: Callable[[int], None] | None = None,
) -> int:
    """Run the supervisor as configured; return the exit code (raise on start-up errors).

    In daemon mode the original process returns once the daemon serves, after calling
    ``announce`` with the daemon's pid.
    """
    detach = daemon or config.tunnel.daemon
    if detach and not config.path.startswith("<"):
        # The daemon changes to "/": a relative path would name another file on reload.
        config = dataclasses.replace(config, path=os.path.abspath(config.path))
    identity = privileges.resolve(config)
    privileges.check_root(config, identity)
    readable.require(config, identity)  # a reload re-reads them as that user
    pidfile = PidFile(config.tunnel.pid_file) if config.tunnel.pid_file else None
    if pidfile is not None:
        pidfile.claim()
    activated = adopt_activated(config, sd_notify.listen_fds())
    runner = Supervisor(config, log_level=log_level, inherited=activated)
    reporter: Reporter | None = None
    status: list[StatusFile] = []
    try:
        try:
            runner.prepare()
        except OSError as exc:
            raise TunnelError(f"cannot start: {exc}") from exc
        if detach:
            if config.tunnel.log_target == "stderr":
                log.warning(
                    "daemon mode: logs to stderr will be discarded; "
                    "set log_target = syslog or file in [tunnel]"
                )
            outcome = daemonize()
            if isinstance(outcome, tuple):  # the original process: the daemon reported
                code, message = outcome
                if code:
                    raise StartFailed(code, message)
                if announce is not None:
                    announce(int(message))
                return 0
            reporter = outcome
            runner.after_fork.append(reporter.close_in_child)
            runner.on_ready.append(reporter.ok)
        if pidfile is not None:
            runner.before_workers.append(lambda: _pid_file_hook(runner, pidfile, status))
        if identity is not None:
            runner.before_workers.append(lambda: _drop_hook(identity, config.tunnel.user))
        if os.environ.get("NOTIFY_SOCKET"):
            runner.notify = sd_notify.notify
        return runner.run()
    except ConfigErrors as exc:
        if reporter is not None:
            reporter.fail(2, str(exc))
        raise
    except (TunnelError, OSError) as exc:
        if reporter is not None:
            reporter.fail(1, str(exc))
        raise
    finally:
        for status_file in status:
            status_file.remove()
        if pidfile is not None:
            pidfile.remove()
