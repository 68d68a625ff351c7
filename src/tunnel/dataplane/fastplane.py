"""The compiled data plane's Python side: which listeners it serves, and its calls.

The extension (``_fastplane``, C sources in ``csrc/``) runs accept, TLS handshake, backend
connect, relay, half-close, timeouts and linger in C, on its own epoll set that the worker's
loop watches as one reader, or selects through (:mod:`tunnel.dataplane.oneloop`).
Python is called twice per connection (none at all on a quiet listener:
:mod:`tunnel.dataplane.fastplane_quiet`):
:meth:`CompiledPlane._on_handshake` (route, PROXY header, addresses to try:
:mod:`tunnel.dataplane.fastplane_route`) and :meth:`CompiledPlane._on_close` (metrics and
the log line, the same as the Python plane's: :mod:`tunnel.dataplane.fastplane_close`);
at once for a failed connect attempt (:meth:`CompiledPlane._on_connect`), so that the
pool's passive health and its log lines are as timely as on the Python plane; and on a
``proxy_from`` listener once before the handshake, with the PROXY header's bytes
(:mod:`tunnel.dataplane.fastplane_proxy`). Listeners with per-IP rates or caps add one call
at accept, and ``deny_ja4`` listeners one at the ClientHello
(:mod:`tunnel.dataplane.fastplane_policy`). On a listener with passthrough routes, the
first bytes of each connection go to :meth:`CompiledPlane._on_sniff` (usually once) before
OpenSSL reads any: its ClientHello decides whether the connection is terminated, refused
or passed through (:mod:`tunnel.dataplane.fastplane_passthrough`).

This module holds the set-up (the plane, each listener's :meth:`CompiledPlane.add`), the
plane's life (start, drain, close, statistics) and the calls from C that only pass on to
the policies; the public names of the compiled plane are importable from here.
Which listeners it serves is decided in :mod:`tunnel.dataplane.plane`; the bookkeeping
between the two calls is in :mod:`tunnel.dataplane.fastplane_facts`.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from tunnel.config import BackendConfig
from tunnel.config.routing import NameTable
from tunnel.dataplane import oneloop
from tunnel.dataplane.fastplane_close import Closer
from tunnel.dataplane.fastplane_close import log as log
from tunnel.dataplane.fastplane_facts import AddressCache, Pending
from tunnel.dataplane.fastplane_passthrough import Sniffer
from tunnel.dataplane.fastplane_policy import Policy, keylog_fd
from tunnel.dataplane.fastplane_proxy import ProxyIn, proxy_in_args
from tunnel.dataplane.fastplane_quiet import QuietListeners
from tunnel.dataplane.fastplane_route import MAX_ADDRESSES as MAX_ADDRESSES
from tunnel.dataplane.fastplane_route import Decision as Decision
from tunnel.dataplane.fastplane_tls import BackendTLS
from tunnel.dataplane.listener import ListenerRuntime
from tunnel.dataplane.plane import COMPILED as COMPILED
from tunnel.dataplane.plane import DEFAULT as DEFAULT
from tunnel.dataplane.plane import ENV as ENV
from tunnel.dataplane.plane import PYTHON as PYTHON
from tunnel.dataplane.plane import backends_of
from tunnel.dataplane.plane import choose as choose
from tunnel.dataplane.plane import load as load
from tunnel.dataplane.plane import unsupported as unsupported
from tunnel.tls.contexts import SNISelector

wlog = logging.getLogger("tunnel.worker")


class CompiledPlane(Closer):
    """One worker's compiled data plane and the listeners it serves."""

    def __init__(
        self,
        module: ModuleType,
        max_connections: int,
        worker: Any,
        backends: Mapping[str, BackendConfig],
    ) -> None:
        self.worker = worker  # told when a connection ends (drain) and asked nothing else
        self.plane: Any = module.Plane(
            self._on_handshake,
            self._on_close,
            self._on_notice,
            self._on_rejected,
            self._on_accept,
            self._on_connect,
            max_connections,
        )
        self._module = module
        self._backends = backends
        self.runtimes: dict[int, ListenerRuntime] = {}
        self._pending: dict[int, Pending] = {}
        self._rejected: set[int] = set()  # connections whose client certificate was refused
        self._policy = Policy()  # per-IP caps and rates, deny_ja4 (fastplane_policy.py)
        self.proxy = ProxyIn(self._admit_proxied)  # PROXY headers of proxy_from listeners
        self._tls = BackendTLS(module.ctx_pointer)  # TLS backends' settings for C
        self._sniffer = Sniffer(self._policy, self._pass_through)  # passthrough routes
        self._addresses = AddressCache()  # the addresses C gets, by the members tried
        self._quiet = QuietListeners(self.plane)  # listeners served without these calls

    @property
    def live(self) -> int:
        """Open connections on the compiled plane."""
        return int(self.plane.live)

    def add(self, runtime: ListenerRuntime, socks: Sequence[socket.socket]) -> None:
        """Serve ``runtime``'s listener from its sockets; raise OSError/RuntimeError if not."""
        ctx = runtime.ctx
        pointer = self._module.ctx_pointer
        # Client mode: plaintext clients, no context (C gets 0 and runs no TLS on that side).
        selector = None if runtime.config.client else ctx.sni_callback
        table: NameTable[ssl.SSLContext] = NameTable()
        strict = False
        if isinstance(selector, SNISelector):
            table, strict = selector.table, selector.strict
        elif selector is not None:
            raise RuntimeError("the context has an SNI callback the compiled plane cannot run")
        exact = [(name, pointer(value)) for name, value in table.exact.items()]
        wild = [(name, pointer(value)) for name, value in table.wildcard.items()]
        cfg = runtime.config
        used = backends_of(cfg, self._backends)
        need_local = cfg.proxy_protocol != "off" or any(
            backend.proxy_protocol != "off" for backend in used
        )
        self._tls.prepare(runtime.routes)  # refused (RuntimeError, OSError): Python plane
        lid = len(self.runtimes)
        ctx_ptr = 0 if cfg.client else pointer(ctx)  # client mode: no TLS on the client side
        # No key log, nor ClientHello to look at, without TLS on the client side.
        log_fd = -1 if cfg.client else keylog_fd(runtime)  # OSError: the Python plane
        fds = []
        try:
            for sock in socks:
                fd = os.dup(sock.fileno())
                fds.append(fd)
                os.set_blocking(fd, False)
        except OSError:
            for fd in [*fds, log_fd] if log_fd >= 0 else fds:
                os.close(fd)
            raise
        self.runtimes[lid] = runtime
        self.plane.add_listener(
            lid,
            fds,
            ctx_ptr,
            exact,
            wild,
            strict,
            cfg.handshake_timeout,
            cfg.idle_timeout,
            cfg.buffer_size,
            cfg.max_connections,
            need_local,
            cfg.verify != "none",
            runtime.per_ip is not None or runtime.rates is not None,  # on_accept is asked
        )
        if cfg.proxy_from:
            timeout, nets, untrusted, expired = proxy_in_args(cfg)
            self.plane.proxy_in(lid, timeout, nets, self.proxy.feed, untrusted, expired)
        if runtime.passthrough and not cfg.client:  # the ClientHello routes first
            self.plane.passthrough(lid, self._on_sniff)
        if not cfg.client and (cfg.keylog_file is not None or runtime.deny_ja4):
            deny = bool(runtime.deny_ja4)
            self.plane.set_policy(  # owns log_fd from here on
                lid,
                log_fd,
                self._on_hello if deny else None,
                self._on_first if deny else None,
            )
        self._quiet.add(lid, runtime)  # no call per connection, where none is needed

    def start(self) -> None:
        """Accept from now on; let the worker's event loop run the plane's events."""
        loop = next(iter(self.runtimes.values())).loop
        if not oneloop.selects_for(loop, self.plane):  # else the loop waits in the plane
            loop.add_reader(self.plane.fileno(), self.plane.run_once)
        self.plane.start_accepting()

    def stop_accepting(self) -> None:
        """Drain: accept no more (the worker's listening sockets stay open elsewhere)."""
        self.plane.stop_accepting()

    def close_all(self, hurry: bool) -> None:
        """End every connection: with close_notify and linger, or at once if ``hurry``."""
        self.plane.close_all(hurry)

    def close(self) -> None:
        """Stop watching the plane's events."""
        if self.runtimes:
            loop = next(iter(self.runtimes.values())).loop
            if not oneloop.selects_for(loop, self.plane):
                loop.remove_reader(self.plane.fileno())

    def report_quiet(self) -> None:
        """At the worker's end: the quiet listeners' debug aid (fastplane_quiet.py)."""
        self._quiet.report()

    def sync_stats(self) -> None:
        """Copy the counters kept in C into the listeners' statistics."""
        self._count_connects()
        self._quiet.take()  # the connections served without a call (fastplane_quiet.py)
        for lid, runtime in self.runtimes.items():
            runtime.stats.accepted, runtime.stats.active = self.plane.counts(lid)

    # -- the calls from C (the others: fastplane_route.py, fastplane_close.py) --------
    def _on_accept(self, lid: int, cid: int, peer: tuple[str, int] | None) -> bool:
        """The per-IP rates and caps: count the new connection, or refuse it (False)."""
        return self._policy.accept(self.runtimes[lid], cid, peer) is None

    def _admit_proxied(self, lid: int, cid: int, peer: tuple[str, int]) -> str | None:
        """The same for the client a balancer's header named: None, or the close reason."""
        refused = self._policy.accept(self.runtimes[lid], cid, peer)
        return refused.text() if refused is not None else None

    def _on_hello(
        self, lid: int, cid: int, hello: bytes | None, length: int, records: int
    ) -> tuple[int, str] | None:
        """deny_ja4, before OpenSSL parses the ClientHello: None, or (alert, reason)."""
        return self._policy.hello(self.runtimes[lid], cid, hello, length, records)

    def _on_first(self, lid: int, cid: int, data: bytes) -> tuple[int, str] | None:
        """deny_ja4: first bytes that cannot start a ClientHello: the reader's refusal."""
        return self._policy.first_bytes(self.runtimes[lid], cid, data)

    def _on_notice(self, what: str, lid: int, limit: int) -> None:
        if what == "worker_full":
            wlog.warning("max_connections (%d) reached: not accepting until connections end", limit)
        else:
            wlog.warning(
                "listener %s: max_connections (%d) reached: not accepting until connections end",
                self.runtimes[lid].name,
                limit,
            )
