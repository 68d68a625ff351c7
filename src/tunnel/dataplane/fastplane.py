"""The compiled data plane's Python side: which listeners it serves, and its two calls.

The extension (``_fastplane``, C sources in ``csrc/``) runs accept, TLS handshake, backend
connect, relay, half-close, timeouts and linger in C, on its own epoll set that the worker's
loop watches as one reader. Python is called twice per connection:
:meth:`CompiledPlane._on_handshake` (route, PROXY header, addresses to try) and
:meth:`CompiledPlane._on_close` (metrics and the log line, the same as the Python plane's);
at once for a failed connect attempt (:meth:`CompiledPlane._on_connect`), so that the
pool's passive health and its log lines are as timely as on the Python plane; and on a
``proxy_from`` listener once before the handshake, with the PROXY header's bytes
(:mod:`tunnel.dataplane.fastplane_proxy`). Listeners with per-IP rates or caps add one call
at accept, and ``deny_ja4`` listeners one at the ClientHello
(:mod:`tunnel.dataplane.fastplane_policy`). On a listener with passthrough routes, the
first bytes of each connection go to :meth:`CompiledPlane._on_sniff` (usually once) before
OpenSSL reads any: its ClientHello decides whether the connection is terminated, refused
or passed through (:mod:`tunnel.dataplane.fastplane_passthrough`).

Which listeners it serves is decided in :mod:`tunnel.dataplane.plane`; the bookkeeping
between the two calls is in :mod:`tunnel.dataplane.fastplane_facts`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from tunnel._native.openssl import group_display_name
from tunnel.config import Address, BackendConfig
from tunnel.config.routing import NameTable
from tunnel.dataplane.connection import UNIQUE_ID_BYTES, ListenerRuntime
from tunnel.dataplane.fastplane_facts import (
    Attempt,
    Facts,
    Pending,
    SockAddr,
    certificate_facts,
    close_labels,
    count_attempts,
    recovering,
    sockaddr,
    tls_fields,
)
from tunnel.dataplane.fastplane_passthrough import (
    Answer,
    Sniffer,
    proxy_header,
    summary_fields,
)
from tunnel.dataplane.fastplane_policy import SUMMARIZED, Policy, keylog_fd
from tunnel.dataplane.fastplane_proxy import ProxyIn, proxy_in_args
from tunnel.dataplane.fastplane_tls import BackendTLS, Settings
from tunnel.dataplane.plane import COMPILED as COMPILED
from tunnel.dataplane.plane import DEFAULT as DEFAULT
from tunnel.dataplane.plane import ENV as ENV
from tunnel.dataplane.plane import PYTHON as PYTHON
from tunnel.dataplane.plane import backends_of, numeric
from tunnel.dataplane.plane import choose as choose
from tunnel.dataplane.plane import load as load
from tunnel.dataplane.plane import unsupported as unsupported
from tunnel.dataplane.pool import Member
from tunnel.dataplane.summary import format_summary, peer_text, tcp_addr
from tunnel.dataplane.targets import Target
from tunnel.tls.contexts import SNISelector
from tunnel.wire import proxy_out
from tunnel.wire.clienthello import ClientHello
from tunnel.wire.ja4 import message_ja4

log = logging.getLogger("tunnel.conn")
wlog = logging.getLogger("tunnel.worker")

MAX_ADDRESSES = 64  # the C side takes at most this many addresses per connection
# The addresses to try, the PROXY header, the connect timeout (and TLS settings, if any).
Decision = (
    tuple[tuple[SockAddr, ...], bytes, float, bool]
    | tuple[tuple[SockAddr, ...], bytes, float, bool, Settings]
)


class CompiledPlane:
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

    def start(self) -> None:
        """Let the worker's event loop run the plane's events."""
        loop = next(iter(self.runtimes.values())).loop
        loop.add_reader(self.plane.fileno(), self.plane.run_once)

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
            loop.remove_reader(self.plane.fileno())

    def sync_stats(self) -> None:
        """Copy the accepted/active counters kept in C into the listeners' statistics."""
        self._count_connects()
        for lid, runtime in self.runtimes.items():
            runtime.stats.accepted, runtime.stats.active = self.plane.counts(lid)

    def _count_connects(self) -> None:
        """Backend statistics of the connections that reached their backend since last time."""
        batch = self.plane.take_connected()
        for lid, cid, attempts in batch or ():
            entry = self._pending.get(cid)
            if entry is not None:
                count_attempts(self.runtimes[lid], entry, attempts)

    # -- the calls from C -------------------------------------------------------------
    def _on_handshake(
        self,
        lid: int,
        cid: int,
        facts: Facts,
        peer: tuple[str, int] | None,
        local: tuple[str, int] | None,
        seconds: float,
        cert: bytes | None,
        hello: bytes | None,
    ) -> Decision | str | None:
        runtime = self.runtimes[lid]
        self._count_connects()  # the pools' passive health before this connection's order
        peer, local, tlvs = self.proxy.addresses(cid, peer, local)
        sni, alpn, version, cipher, resumed, group = facts
        if runtime.per_ip is not None or runtime.rates is not None:
            self._policy.handshake_done(runtime, cid, resumed)
        runtime.stats.groups[group_display_name(group) if group else "-"] += 1
        identity = certificate_facts(cert, resumed) if cert else None
        runtime.stats.handshake_ok(seconds, version or "-", cipher or "-", alpn or "-")
        target = runtime.routes.choose(sni, alpn)
        fingerprint = message_ja4(hello)
        uid = None
        preamble = b""
        options = target.proxy
        if options is not None:
            if options.unique_id:
                uid = os.urandom(UNIQUE_ID_BYTES)
            tls = (
                proxy_out.TLSFacts()
                if options.version == "v1"
                else proxy_out.TLSFacts(
                    version=version,
                    cipher=cipher,
                    alpn=alpn,
                    sni=sni,
                    ja4=fingerprint,
                    group=group_display_name(group) if group else None,
                )
            )
            client_cert = None
            if identity is not None and options.version != "v1":
                client_cert = dataclasses.replace(
                    identity[1], der=cert if options.cert_tlv else None
                )
            preamble = proxy_out.build_header(
                options,
                tcp_addr(peer),
                tcp_addr(local),
                tls,
                cert=client_cert,
                unique_id=uid,
                balancer_tlvs=tlvs,
            )
        entry = self._entry(cid, target, uid, fingerprint)
        if identity is not None:
            entry.client = identity[0]
        return self._route(runtime, cid, entry, preamble)

    def _on_sniff(self, lid: int, cid: int, data: bytes, peer: Any, local: Any) -> Answer:
        """Passthrough routes: the first bytes, peeked (fastplane_passthrough.py)."""
        return self._sniffer.sniff(self.runtimes[lid], cid, data, peer, local)

    def _pass_through(
        self,
        runtime: ListenerRuntime,
        cid: int,
        target: Target,
        hello: ClientHello,
        fingerprint: str,
        peer: Any,
        local: Any,
    ) -> Decision | str | None:
        """The backend decision of a passed-through connection, as Passthrough.begin and
        its PROXY header (v2: the SNI and JA4, no SSL TLV: Tunnel did not terminate)."""
        self._count_connects()
        runtime.stats.passed_through()
        if runtime.per_ip is not None or runtime.rates is not None:
            self._policy.handshake_done(runtime, cid, False)  # the part Tunnel reads is over
        peer, local, tlvs = self.proxy.addresses(cid, peer, local)
        uid, preamble = proxy_header(target, hello.server_name, fingerprint, peer, local, tlvs)
        entry = self._entry(cid, target, uid, fingerprint)
        entry.passthrough, entry.sni = True, hello.server_name
        return self._route(runtime, cid, entry, preamble)

    def _entry(
        self, cid: int, target: Target, uid: bytes | None, fingerprint: str | None
    ) -> Pending:
        """Remember a connection that goes to ``target`` until it closes."""
        members = tuple(target.pool.candidates(time.monotonic()))
        origins = tuple(member.address for member in members)
        entry = self._pending[cid] = Pending(target, uid, origins, members, ja4=fingerprint)
        return entry

    def _route(
        self, runtime: ListenerRuntime, cid: int, entry: Pending, preamble: bytes
    ) -> Decision | str | None:
        """The addresses of the target's pool for C (None: resolved first, then decided)."""
        if not entry.members:
            return f"backend unreachable: backend {entry.target.pool.name} has no address (DNS)"
        origins = entry.origins
        addrs = tuple(sockaddr(a) for a in origins) if all(map(numeric, origins)) else None
        if addrs is None:  # answered later, by plane.decide()
            entry.task = runtime.loop.create_task(self._resolve(cid, runtime, entry, preamble))
            return None
        return self._decision(entry, addrs, preamble)

    def _decision(self, entry: Pending, addrs: tuple[SockAddr, ...], preamble: bytes) -> Decision:
        """The addresses to try and how: with the backend's TLS settings if it has ``tls``."""
        target = entry.target
        timeout = target.backend.connect_timeout
        watch = recovering(entry.members)
        if target.tls is None:
            return addrs, preamble, timeout, watch
        tls = self._tls.settings(target.tls, target.backend.sni, entry.origins)
        return addrs, preamble, timeout, watch, tls

    async def _resolve(
        self, cid: int, runtime: ListenerRuntime, entry: Pending, preamble: bytes
    ) -> None:
        """Resolve the target's host names (each under the connect timeout), then decide."""
        backend = entry.target.backend
        addrs: list[SockAddr] = []
        origins: list[Address] = []
        members: list[Member] = []
        for member in entry.members:
            addr = member.address
            if numeric(addr):
                addrs.append(sockaddr(addr))
                origins.append(addr)
                members.append(member)
                continue
            try:
                async with asyncio.timeout(backend.connect_timeout):
                    infos = await runtime.loop.getaddrinfo(
                        addr.host, addr.port, type=socket.SOCK_STREAM
                    )
            except TimeoutError:
                entry.failures.append(f"{addr}: connect timed out")
                runtime.backend_stats(addr).failed("timeout")
                entry.target.pool.failed(member, time.monotonic(), entry.failures[-1])
                continue
            except OSError as exc:
                entry.failures.append(f"{addr}: {exc.strerror or exc}")
                runtime.backend_stats(addr).failed("error")
                entry.target.pool.failed(member, time.monotonic(), entry.failures[-1])
                continue
            for family, _type, _proto, _name, found in infos:
                if family in (socket.AF_INET, socket.AF_INET6):
                    addrs.append((int(family), str(found[0]), int(found[1])))
                    origins.append(addr)
                    members.append(member)
        entry.task = None
        entry.origins = tuple(origins[:MAX_ADDRESSES])
        entry.members = tuple(members[:MAX_ADDRESSES])
        if addrs:
            self.plane.decide(cid, self._decision(entry, tuple(addrs[:MAX_ADDRESSES]), preamble))
        else:
            self.plane.decide(cid, "backend unreachable: " + "; ".join(entry.failures))

    def _on_close(
        self,
        lid: int,
        cid: int,
        reason: str,
        peer: tuple[str, int] | None,
        facts: Facts,
        bytes_in: int,
        bytes_out: int,
        duration: float,
        backend_index: int,
        attempts: list[Attempt] | None,
        hello: bytes | None,
    ) -> None:
        runtime = self.runtimes[lid]
        peer = self.proxy.forget(cid, peer)
        if runtime.per_ip is not None or runtime.rates is not None:
            self._policy.closed(runtime, cid)
        self._count_connects()
        entry = self._pending.pop(cid, None)
        backend: Address | None = None
        uid = client = None
        denied = self._sniffer.forget(cid)  # a JA4 denied before OpenSSL read the hello
        fingerprint = message_ja4(hello) or denied  # a hello is left here if no handshake-done
        if entry is not None:
            uid, client, fingerprint = entry.uid, entry.client, entry.ja4
            if entry.task is not None:
                entry.task.cancel()  # the client left while the names were resolved
            if entry.member is not None:
                entry.member.active -= 1  # least-connections
            if attempts:
                count_attempts(runtime, entry, attempts)  # counted already, as they failed
                backend = entry.origins[attempts[-1][0]]
                if reason == "backend unreachable":
                    reason = "backend unreachable: " + "; ".join(entry.failures)
            if backend_index >= 0:
                backend = entry.origins[backend_index]
            elif backend is None and entry.failures:
                backend = entry.target.backend.connect[-1]
        rejected = cid in self._rejected
        self._rejected.discard(cid)
        kind, failure = close_labels(reason, rejected, self._policy.took_bad_hello(cid))
        runtime.stats.ended(kind, bytes_in, bytes_out, failure)
        self.worker.compiled_closed()
        # Refusals after a balancer's header have a summary line instead (as in Python).
        level = logging.DEBUG if kind in SUMMARIZED else logging.INFO
        if not log.isEnabledFor(level):
            return
        if entry is not None and entry.passthrough:
            fields = summary_fields(runtime, peer_text(peer), entry.sni, fingerprint, backend)
        else:
            fields = tls_fields(runtime, peer, facts, fingerprint, client, backend)
        fields |= {
            "in": bytes_in,
            "out": bytes_out,
            "duration": round(duration, 3),
            "reason": reason,
        }
        if uid and backend_index >= 0:  # only once the header went to a backend
            fields["uid"] = uid.hex()
        log.log(level, "%s", format_summary(fields), extra={"conn": fields})

    def _on_connect(self, lid: int, cid: int, attempts: list[tuple[int, int, float]]) -> None:
        """Connect attempts C reports at once (a failure, or a success asked for by
        :func:`recovering`): counted after the successes C still holds, in their order."""
        self._count_connects()
        entry = self._pending.get(cid)
        if entry is not None:
            count_attempts(self.runtimes[lid], entry, attempts)

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

    def _on_rejected(self, lid: int, cid: int, result: int, text: str) -> str | None:
        """Why a handshake of a listener that asks for client certificates failed, if it
        was the certificate: an allow-list reason, or the verification error."""
        runtime = self.runtimes[lid]
        check = runtime.allow_check
        reason = check.take() if check is not None else None
        if reason is None and result != 0:
            reason = f"client certificate: {text}"
        if reason is not None:
            runtime.stats.clients_rejected += 1
            self._rejected.add(cid)
        return reason

    def _on_notice(self, what: str, lid: int, limit: int) -> None:
        if what == "worker_full":
            wlog.warning("max_connections (%d) reached: not accepting until connections end", limit)
        else:
            wlog.warning(
                "listener %s: max_connections (%d) reached: not accepting until connections end",
                self.runtimes[lid].name,
                limit,
            )
