"""The compiled plane's calls from C at the end of a connection.

:meth:`Closer._on_rejected` says why a handshake that asked for a client certificate
failed, when it was the certificate; :meth:`Closer._on_close` releases what Python kept of
the connection and gives it the Python plane's metrics and log line.
:class:`tunnel.dataplane.fastplane.CompiledPlane` sets up the state used here.
"""

from __future__ import annotations

import logging
from typing import Any

from tunnel.config import Address
from tunnel.dataplane.fastplane_facts import (
    Attempt,
    Facts,
    close_labels,
    count_attempts,
    entry_ja4,
    hello_ja4,
    tls_fields,
)
from tunnel.dataplane.fastplane_passthrough import summary_fields
from tunnel.dataplane.fastplane_policy import SUMMARIZED
from tunnel.dataplane.fastplane_route import Router
from tunnel.dataplane.summary import format_summary, peer_text

log = logging.getLogger("tunnel.conn")


class Closer(Router):
    """The end of each connection (a base of CompiledPlane)."""

    worker: Any  # set up by CompiledPlane.__init__ (fastplane.py), as _rejected
    _rejected: set[int]

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
        # deny_ja4's JA4 of a hello whose handshake did not complete (else taken already).
        known = self._policy.fingerprints.pop(cid, None) if self._policy.fingerprints else None
        backend: Address | None = None
        uid = client = None
        # A JA4 denied before OpenSSL read the hello (only listeners with passthrough routes
        # have their first bytes sniffed: no call for the others).
        denied = self._sniffer.forget(cid) if runtime.passthrough else None
        if entry is not None:
            uid, client = entry.uid, entry.client
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
        rejected = bool(self._rejected) and cid in self._rejected  # empty, nearly always
        if rejected:
            self._rejected.discard(cid)
        bad_hello = bool(self._policy.bad_hello) and self._policy.took_bad_hello(cid)
        kind, failure = close_labels(reason, rejected, bad_hello)
        runtime.stats.ended(kind, bytes_in, bytes_out, failure)
        self.worker.compiled_closed()
        # Refusals after a balancer's header have a summary line instead (as in Python).
        level = logging.DEBUG if kind in SUMMARIZED else logging.INFO
        if not log.isEnabledFor(level):
            return  # the JA4 only for the log line: it is most of the cost (a Python parse)
        # Without an entry (no handshake-done), C hands the ClientHello over here.
        fingerprint = entry_ja4(entry) if entry is not None else known or hello_ja4(hello) or denied
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
