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
collects them with ``sigtimedwait`` (SIGCHLD included) and acts on them in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import socket
import ssl
import time
from dataclasses import dataclass

from tunnel.config import Address, Config, ListenerConfig
from tunnel.errors import ConfigError, ConfigErrors, TunnelError
from tunnel.relay import enable_sni_capture
from tunnel.tls import build_server_context
from tunnel.worker import run_worker

log = logging.getLogger("tunnel.supervisor")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
_STABLE_SECONDS = 10.0
_MAX_BACKOFF = 30.0
_PR_SET_PDEATHSIG = 1


def worker_count(config: Config) -> int:
    """The number of worker processes (``workers = auto``: one per CPU core)."""
    if config.tunnel.workers > 0:
        return config.tunnel.workers
    return len(os.sched_getaffinity(0)) or 1


def build_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """Build every listener's TLS context; report all failures at once."""
    contexts: dict[str, ssl.SSLContext] = {}
    errors: list[ConfigError] = []
    for listener in config.listeners:
        try:
            ctx = build_server_context(listener, config.path)
        except ConfigError as exc:
            errors.append(exc)
            continue
        enable_sni_capture(ctx)
        contexts[listener.name] = ctx
    if errors:
        raise ConfigErrors(errors)
    return contexts


def _bind_error(
    config: Config, listener: ListenerConfig, addr: Address, exc: OSError
) -> ConfigError:
    hints = {
        errno.EADDRINUSE: "another process listens there: stop it or change 'accept'",
        errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    }
    return ConfigError(
        f"cannot listen on {addr}: {exc.strerror or exc}",
        file=config.path,
        section=listener.name,
        key="accept",
        hint=hints.get(exc.errno or 0, "check the address"),
    )


def probe_free(addr: Address) -> None:
    """Raise OSError(EADDRINUSE) if anything already listens on ``addr``.

    Our sockets use SO_REUSEPORT, which would let a second Tunnel (same user) silently
    share the port; a plain bind first makes that an "address in use" error instead.
    """
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((addr.host, addr.port))


def bind_socket(addr: Address, backlog: int) -> socket.socket:
    """One non-blocking SO_REUSEPORT listening socket."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_all(config: Config, workers: int) -> dict[str, list[list[socket.socket]]]:
    """Per listener, per worker: the sockets of all its accept addresses."""
    bound: dict[str, list[list[socket.socket]]] = {}
    errors: list[ConfigError] = []
    for listener in config.listeners:
        per_worker: list[list[socket.socket]] = [[] for _ in range(workers)]
        for addr in listener.accept:
            if addr.port:
                try:
                    probe_free(addr)
                except OSError as exc:
                    errors.append(_bind_error(config, listener, addr, exc))
                    continue
            for index in range(workers):
                try:
                    per_worker[index].append(bind_socket(addr, listener.backlog))
                except OSError as exc:
                    errors.append(_bind_error(config, listener, addr, exc))
                    break
        bound[listener.name] = per_worker
    if errors:
        close_sockets(bound)
        raise ConfigErrors(errors)
    return bound


def close_sockets(bound: dict[str, list[list[socket.socket]]]) -> None:
    """Close every socket of ``bind_all``'s result."""
    for per_worker in bound.values():
        for socks in per_worker:
            for sock in socks:
                sock.close()


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one (each connection needs two fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _die_with_parent() -> None:
    # A worker must not outlive its supervisor (e.g. after SIGKILL of the supervisor).
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(slots=True)
class WorkerSlot:
    """One worker position: its process and restart bookkeeping."""

    index: int
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Owns the listening sockets and the worker processes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers = worker_count(config)
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.sockets: dict[str, list[list[socket.socket]]] = {}
        self.slots = [WorkerSlot(i) for i in range(self.workers)]
        self.stopping = False
        self.deadline = 0.0

    def prepare(self) -> None:
        """Load certificates and bind sockets; raise ConfigErrors on any problem."""
        raise_fd_limit()
        self.contexts = build_contexts(self.config)
        self.sockets = bind_all(self.config, self.workers)

    def _spawn(self, slot: WorkerSlot) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                _die_with_parent()
                mine = {name: socks[slot.index] for name, socks in self.sockets.items()}
                for per_worker in self.sockets.values():
                    for index, socks in enumerate(per_worker):
                        if index != slot.index:
                            for sock in socks:
                                sock.close()
                code = run_worker(self.config, self.contexts, mine)
            except BaseException:
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d)", slot.index, pid)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT and every worker has drained; return the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for listener in self.config.listeners:
                addrs = ", ".join(str(a) for a in listener.accept)
                log.info(
                    "listener %s: %s -> %s",
                    listener.name,
                    addrs,
                    ", ".join(str(a) for a in listener.connect),
                )
            for slot in self.slots:
                self._spawn(slot)
            log.info("tunnel started: %d worker(s), pid %d", self.workers, os.getpid())
            return self._loop()
        finally:
            self._kill_all(signal.SIGKILL)
            close_sockets(self.sockets)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _loop(self) -> int:
        while True:
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            if info is not None:
                self._on_signal(info.si_signo)
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if not any(slot.pid for slot in self.slots):
                    log.info("tunnel stopped")
                    return 0
                if now > self.deadline:
                    log.warning("workers did not stop in time: killing them")
                    self._kill_all(signal.SIGKILL)
                continue
            for slot in self.slots:
                if not slot.pid and slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot)

    def _on_signal(self, signo: int) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                log.info("second stop signal: closing all connections now")
            else:
                log.info("stop signal: draining (up to %.0fs)", self.config.tunnel.drain_timeout)
                self.stopping = True
                self.deadline = time.monotonic() + self.config.tunnel.drain_timeout + 5.0
            self._kill_all(signal.SIGTERM)
            # Workers close their copies when they start draining; once ours are closed
            # too, new connections are refused at once (a balancer fails over) instead
            # of waiting in a backlog nobody accepts from.
            close_sockets(self.sockets)
        elif signo == signal.SIGHUP:
            log.warning("SIGHUP: reload is not supported yet; still serving the old configuration")

    def _kill_all(self, signo: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signo)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self._worker_exited(slot, status)

    def _worker_exited(self, slot: WorkerSlot, status: int) -> None:
        pid, slot.pid = slot.pid, 0
        if self.stopping:
            return
        how = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exited with status {os.waitstatus_to_exitcode(status)}"
        )
        lived = time.monotonic() - slot.started
        slot.failures = 0 if lived > _STABLE_SECONDS else slot.failures + 1
        delay = min(_MAX_BACKOFF, 0.1 * (2**slot.failures)) if slot.failures else 0.0
        slot.restart_at = time.monotonic() + delay
        log.error("worker %d (pid %d) %s; restarting in %.1fs", slot.index, pid, how, delay)


def run(config: Config) -> int:
    """Prepare and run a supervisor (raises ConfigErrors/TunnelError before serving)."""
    supervisor = Supervisor(config)
    try:
        supervisor.prepare()
    except OSError as exc:
        raise TunnelError(f"cannot start: {exc}") from exc
    return supervisor.run()
