"""The backend connect loop: a target's pool members in turn, each under the connect timeout.

:class:`PoolConnect` is a mixin (no slots of its own) of the client sides that connect to a
backend: :class:`tunnel.dataplane.connection.ClientConnection` (terminated TLS) and
:class:`tunnel.dataplane.passthrough.Passthrough`. Each supplies ``_connect_one`` (open one
address; a TLS backend also completes its handshake) and ``_unreachable`` (every address
failed). The loop records what each attempt did in the pool (so a failing member is skipped
for a while), in the backend's counters and in the reason the log line gives.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tunnel.config import Address
from tunnel.dataplane.backend_log import backend_tls_failed
from tunnel.dataplane.pool import Member
from tunnel.dataplane.relay_end import CONNECTING
from tunnel.dataplane.tls_endpoint import describe

if TYPE_CHECKING:
    from tunnel.dataplane.listener import ListenerRuntime
    from tunnel.dataplane.targets import Target


class PoolConnect:
    """Mixin: connect to a target's backend pool, failing over to the next member."""

    if not TYPE_CHECKING:
        __slots__ = ()  # the mixing class holds the state (hidden from mypy, see relay_end)

    # Set by the class that mixes this in (in its own slots).
    listener: ListenerRuntime
    state: int
    backend_addr: Any
    member: Member | None
    task: asyncio.Task[None] | None
    connect_expired: bool

    def _unreachable(self, detail: str) -> None:
        """Every address failed (``detail`` says how each did)."""
        raise NotImplementedError

    async def _connect_pool(
        self, target: Target, connect_one: Callable[[Address], Awaitable[None]]
    ) -> None:
        """Connect to the first member of ``target``'s pool that answers."""
        cfg = target.backend
        loop = self.listener.loop
        pool = target.pool
        members = pool.candidates(time.monotonic())  # empty: an SRV name without answers
        failures = [] if members else [f"backend {pool.name} has no address (DNS)"]
        for member in members:
            addr = self.backend_addr = member.address
            last = member is members[-1]
            stats = self.listener.backend_stats(addr)
            begun = time.monotonic()
            # A plain timer rather than asyncio.timeout(): same effect, a fraction of
            # the cost (no current_task/get_running_loop lookups) on every connection.
            self.connect_expired = False
            timer = loop.call_later(cfg.connect_timeout, self._connect_timed_out)
            try:
                await connect_one(addr)
                stats.connected(time.monotonic() - begun)
                pool.succeeded(member)
                member.active += 1
                self.member = member
                self.task = None  # done: a finished Task kept for the connection's life is ~0.7 KiB
                return
            except asyncio.CancelledError:
                task = self.task
                if not self.connect_expired or task is None or task.uncancel():
                    raise  # cancelled from outside (the client left, or shutdown)
                failures.append(f"{addr}: connect timed out")
                stats.failed("timeout")
            except ssl.SSLError as exc:
                failures.append(self._backend_tls_failed(addr, exc, last))
                stats.failed("tls")
            except OSError as exc:
                failures.append(f"{addr}: {exc.strerror or exc}")
                stats.failed(_failure_kind(exc))
            finally:
                timer.cancel()
            pool.failed(member, time.monotonic(), failures[-1])
            if self.state != CONNECTING:
                return  # the client went away meanwhile
        self._unreachable("; ".join(failures))

    def _connect_timed_out(self) -> None:
        self.connect_expired = True
        if self.task is not None:
            self.task.cancel()

    def _backend_tls_failed(self, addr: Address, exc: ssl.SSLError, last: bool) -> str:
        """Log a backend that failed its TLS handshake (failover would hide it otherwise)."""
        why = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else None
        why = why or describe(exc)
        backend_tls_failed(self.listener.name, addr, why, last)
        return f"{addr}: TLS handshake failed: {why}"


def _failure_kind(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return "error"
