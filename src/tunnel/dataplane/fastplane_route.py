"""The compiled plane's calls from C that decide where a connection goes.

At handshake-done (:meth:`Router._on_handshake`), or when a passthrough route's
ClientHello is whole (:meth:`Router._pass_through`, by way of the sniffer): the route by
SNI/ALPN, the PROXY header, the pool's addresses to try and how (resolved first when some
are names: :meth:`Router._resolve`, answered by ``plane.decide()``); and the connect
attempts C reports, counted for the backend statistics and the pools' passive health.
:class:`tunnel.dataplane.fastplane.CompiledPlane` sets up the state used here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from typing import Any

from tunnel._native.openssl import group_display_name
from tunnel.config import Address
from tunnel.dataplane.fastplane_facts import (
    AddressCache,
    Facts,
    Pending,
    SockAddr,
    certificate_facts,
    count_attempts,
    hello_ja4,
    recovering,
    sockaddr,
)
from tunnel.dataplane.fastplane_passthrough import Answer, Sniffer, proxy_header
from tunnel.dataplane.fastplane_policy import Policy
from tunnel.dataplane.fastplane_proxy import ProxyIn
from tunnel.dataplane.fastplane_quiet import QuietListeners
from tunnel.dataplane.fastplane_tls import BackendTLS, Settings
from tunnel.dataplane.listener import UNIQUE_ID_BYTES, ListenerRuntime
from tunnel.dataplane.plane import numeric
from tunnel.dataplane.pool import Member
from tunnel.dataplane.summary import tcp_addr
from tunnel.dataplane.targets import Target
from tunnel.wire import proxy_out
from tunnel.wire.clienthello import ClientHello

MAX_ADDRESSES = 64  # the C side takes at most this many addresses per connection
# The addresses to try, the PROXY header, the connect timeout (and TLS settings, if any).
Decision = (
    tuple[tuple[SockAddr, ...], bytes, float, bool]
    | tuple[tuple[SockAddr, ...], bytes, float, bool, Settings]
)


class Router:
    """The backend decision of each connection (a base of CompiledPlane)."""

    # Set up by CompiledPlane.__init__ (fastplane.py).
    plane: Any
    runtimes: dict[int, ListenerRuntime]
    _pending: dict[int, Pending]
    _policy: Policy
    proxy: ProxyIn
    _tls: BackendTLS
    _sniffer: Sniffer
    _addresses: AddressCache
    _quiet: QuietListeners

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
        # Computed here only for a PROXY TLV, else when logged (if), unless deny_ja4 did.
        known = self._policy.fingerprints
        fingerprint = known.pop(cid, None) if known else None
        if fingerprint is not None:
            hello = None
        uid = None
        preamble = b""
        options = target.proxy
        if options is not None:
            if options.ja4_tlv and options.version != "v1" and fingerprint is None:
                fingerprint, hello = hello_ja4(hello), None
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
        entry = self._entry(cid, target, uid, fingerprint, hello)
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
        self,
        cid: int,
        target: Target,
        uid: bytes | None,
        fingerprint: str | None,
        hello: bytes | None = None,
    ) -> Pending:
        """Remember a connection that goes to ``target`` until it closes (its JA4, or the
        ClientHello to compute it from if asked: :func:`fastplane_facts.entry_ja4`)."""
        members = tuple(target.pool.candidates(time.monotonic()))
        origins = self._addresses.get(members)[0]
        entry = self._pending[cid] = Pending(
            target, uid, origins, members, ja4=fingerprint, hello=hello
        )
        return entry

    def _route(
        self, runtime: ListenerRuntime, cid: int, entry: Pending, preamble: bytes
    ) -> Decision | str | None:
        """The addresses of the target's pool for C (None: resolved first, then decided)."""
        if not entry.members:
            return f"backend unreachable: backend {entry.target.pool.name} has no address (DNS)"
        addrs = self._addresses.get(entry.members)[1]
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

    def _on_connect(self, lid: int, cid: int, attempts: list[tuple[int, int, float]]) -> None:
        """Connect attempts C reports at once (a failure, or a success asked for by
        :func:`recovering`): counted after the successes C still holds, in their order."""
        self._count_connects()
        entry = self._pending.get(cid)
        if entry is None:  # a quiet connection (fastplane_quiet.py): Python hears of it now
            entry = self._quiet.entry(lid, cid)
            if entry is not None:
                self._pending[cid] = entry
        if entry is not None:
            count_attempts(self.runtimes[lid], entry, attempts)
            self._quiet.refresh_all()  # a member failed: Python decides until it is up
