"""Listeners whose connections the compiled plane serves without calling Python.

Python's two calls per connection (the backend decision at handshake-done, the metrics
and the log line at close) cannot tell one connection from the next on a listener with
one target, a single numeric backend address that is up, no PROXY header, no TLS to the
backend, no client certificates, no per-IP limits, deny_ja4, PROXY in or passthrough, and
no per-connection log line (``tunnel.conn`` below INFO, e.g. ``log_level = warning``).
There, :class:`QuietListeners` hands C the decision once and C counts what the calls
would have counted (``csrc/fp_quiet.c`` has the theory of operation);
:meth:`QuietListeners.take` adds those counts to the listener's statistics each time the
worker reports them, so ``/metrics`` shows the same numbers either way.

The quiet path stops while the member is not up (a failed connect: Python hears of it at
once, as always) and starts again once it is. ``TUNNEL_DEBUG_QUIET=FILE`` makes each
worker append how many connections each listener served so, at its end (tests read it).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from tunnel._native.openssl import group_display_name
from tunnel.dataplane.fastplane_facts import Pending, close_labels, sockaddr
from tunnel.dataplane.listener import ListenerRuntime
from tunnel.dataplane.plane import numeric
from tunnel.dataplane.pool import Member
from tunnel.dataplane.targets import Target
from tunnel.observe.metrics import CONNECT_BUCKETS, HANDSHAKE_BUCKETS

DEBUG_ENV = "TUNNEL_DEBUG_QUIET"
conn_log = logging.getLogger("tunnel.conn")


def quiet_target(runtime: ListenerRuntime) -> Target | None:
    """The one target of a listener whose connections need no Python call, else None."""
    cfg = runtime.config
    if cfg.client or cfg.proxy_from or runtime.passthrough or runtime.deny_ja4:
        return None
    if cfg.verify != "none" or runtime.per_ip is not None or runtime.rates is not None:
        return None
    if conn_log.isEnabledFor(logging.INFO):  # each connection has its log line
        return None
    routes = runtime.routes
    if routes.sni.exact or routes.sni.wildcard or routes.alpn:
        return None
    target = routes.default
    if target.proxy is not None or target.tls is not None or target.passthrough:
        return None
    members = target.pool.members
    if len(members) != 1 or not numeric(members[0].address):
        return None
    return target


def _up(member: Member) -> bool:
    """No failures to forget, no back-off to end: a connect would change nothing."""
    return not member.fails and not member.down_until


@dataclass(slots=True)
class _Quiet:
    runtime: ListenerRuntime
    target: Target
    armed: bool = False


class QuietListeners:
    """The quiet listeners of one compiled plane (``plane``: the C ``Plane``)."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._lids: dict[int, _Quiet] = {}

    def add(self, lid: int, runtime: ListenerRuntime) -> None:
        """Serve ``lid`` quietly if it qualifies (and while its member is up)."""
        target = quiet_target(runtime)
        if target is not None:
            self._lids[lid] = _Quiet(runtime, target)
            self.refresh(lid)

    def refresh(self, lid: int) -> None:
        """Arm or disarm ``lid`` as its member is up or not."""
        quiet = self._lids.get(lid)
        if quiet is None:
            return
        member = quiet.target.pool.members[0]
        up = _up(member)
        if up and not quiet.armed:
            addrs = (sockaddr(member.address),)
            timeout = quiet.target.backend.connect_timeout
            self.plane.quiet(lid, addrs, timeout, HANDSHAKE_BUCKETS, CONNECT_BUCKETS)
        elif not up and quiet.armed:
            self.plane.quiet(lid, None, 0.0, (), ())
        quiet.armed = up

    def refresh_all(self) -> None:
        """Arm or disarm every quiet listener: listeners share their backends' pools, so a
        failure seen on one listener concerns the others (their successes would not reset
        the member's failures in a row, as the Python path's would)."""
        for lid in self._lids:
            self.refresh(lid)

    def entry(self, lid: int, cid: int) -> Pending | None:
        """What Python remembers of a quiet connection it hears of for the first time
        (a failed connect): as :meth:`Router._entry` would have made it."""
        quiet = self._lids.get(lid)
        if quiet is None:
            return None
        members = tuple(quiet.target.pool.members)
        return Pending(quiet.target, None, tuple(m.address for m in members), members)

    def take(self) -> None:
        """Add the counts C kept since last time to each quiet listener's statistics."""
        for lid, quiet in self._lids.items():
            got = self.plane.take_quiet(lid)
            if got is not None:
                _count(quiet, got)
            self.refresh(lid)

    def report(self) -> None:
        """The debug aid: append ``pid lid served`` per quiet listener to $TUNNEL_DEBUG_QUIET."""
        path = os.environ.get(DEBUG_ENV)
        if not path:
            return
        lines = "".join(
            f"{os.getpid()} {q.runtime.name} {self.plane.quiet_served(lid)}\n"
            for lid, q in self._lids.items()
        )
        with contextlib.suppress(OSError), open(path, "a", encoding="ascii") as out:
            out.write(lines)


def _count(quiet: _Quiet, got: tuple[Any, ...]) -> None:
    """What on_handshake and on_close would have counted, for ``got``'s connections."""
    rows, hs_buckets, hs_sum, connects, cn_buckets, cn_sum, closes = got[:7]
    bytes_in, bytes_out, opened, ended = got[7:]
    stats = quiet.runtime.stats
    for version, cipher, alpn, group, n in rows:
        stats.handshakes["ok"] += n
        stats.tls[f"{version} {cipher}"] += n
        stats.alpn[alpn or "-"] += n
        stats.groups[group_display_name(group) if group else "-"] += n
    for i, n in enumerate(hs_buckets):
        stats.hs_buckets[i] += n
    stats.hs_sum += hs_sum
    for text, n in closes:
        kind, failure = close_labels(text, False)
        stats.closed[kind.value] += n
        implied = kind.handshake_failure
        if implied is not None:
            stats.handshakes[(failure or implied).value] += n
    stats.bytes_in += bytes_in
    stats.bytes_out += bytes_out
    member = quiet.target.pool.members[0]
    if connects:
        backend = quiet.runtime.backend_stats(member.address)
        backend.connects += connects
        for i, n in enumerate(cn_buckets):
            backend.buckets[i] += n
        backend.seconds += cn_sum
    member.active += opened - ended
