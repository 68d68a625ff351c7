"""SNI passthrough on the compiled plane: the Python half of ``csrc/fp_passthrough.c``.

On a listener whose routes lead to a ``passthrough = yes`` backend, C peeks at the first
bytes of each connection before OpenSSL reads any, and hands them to
:meth:`Sniffer.sniff` until the ClientHello is whole. The Python plane's reader
(:class:`~tunnel.wire.clienthello.ClientHelloReader`, kept per connection and fed only
the bytes it has not seen) decides as :meth:`tunnel.dataplane.connection.ClientConnection.
on_client_hello` does: a hello it refuses gets the ``decode_error`` alert and the same
reason, a denied JA4 the ``handshake_failure`` alert, a name routed to a passthrough
backend is passed through (the answer is a one-item list holding the backend decision),
and any other is terminated (OpenSSL reads the hello off the socket, as without a sniff).

:func:`summary_fields` gives a passed-through connection the Python plane's log line
(:meth:`tunnel.dataplane.passthrough.Passthrough.summary_fields`): what only a terminator
knows is ``-``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tunnel.dataplane.fastplane_policy import ALERT_HANDSHAKE_FAILURE, Policy
from tunnel.dataplane.listener import UNIQUE_ID_BYTES, ListenerRuntime
from tunnel.dataplane.summary import tcp_addr
from tunnel.dataplane.targets import Target
from tunnel.wire import proxy_out
from tunnel.wire.clienthello import ClientHello, ClientHelloError, ClientHelloReader
from tunnel.wire.ja4 import ja4

# C's answer to a sniff: None (more is needed), True (terminate TLS), (alert, close
# reason) (refuse), or [the backend decision] (pass through).
Answer = bool | tuple[int, str] | list[Any] | None
# Makes the backend decision of a passed-through connection (CompiledPlane._pass_through).
PassOn = Callable[[ListenerRuntime, int, Target, ClientHello, str, Any, Any], Any]


class Sniffer:
    """The ClientHello readers of connections being sniffed (by connection id)."""

    __slots__ = ("_denied", "_pass_on", "_policy", "_readers")

    def __init__(self, policy: Policy, pass_on: PassOn) -> None:
        self._policy = policy  # words and counts a hello the reader refuses
        self._pass_on = pass_on
        self._readers: dict[int, tuple[ClientHelloReader, int]] = {}  # reader, bytes fed
        self._denied: dict[int, str] = {}  # the JA4 of a hello denied here, for its log line

    def sniff(
        self, runtime: ListenerRuntime, cid: int, data: bytes, peer: Any, local: Any
    ) -> Answer:
        """The bytes waiting on the client's socket (all of them, peeked); see :data:`Answer`."""
        reader, fed = self._readers.pop(cid, (ClientHelloReader(), 0))
        try:
            hello = reader.feed(memoryview(data)[fed:])  # C peeks from the start each time
        except ClientHelloError as exc:
            return self._policy.unreadable(runtime, cid, str(exc))
        if hello is None:
            self._readers[cid] = (reader, len(data))
            return None
        fingerprint = ja4(hello)
        if fingerprint in runtime.deny_ja4:
            runtime.stats.denied["ja4"] += 1
            self._denied[cid] = fingerprint
            return ALERT_HANDSHAKE_FAILURE, f"denied: ja4 {fingerprint}"
        target = runtime.routes.choose(hello.server_name, None)
        if not target.passthrough:
            return True
        return [self._pass_on(runtime, cid, target, hello, fingerprint, peer, local)]

    def forget(self, cid: int) -> str | None:
        """The connection ended: drop its reader; the JA4 it was denied for, if it was."""
        self._readers.pop(cid, None)
        return self._denied.pop(cid, None)


def proxy_header(
    target: Target,
    sni: str | None,
    fingerprint: str,
    peer: Any,
    local: Any,
    tlvs: tuple[tuple[int, bytes], ...],
) -> tuple[bytes | None, bytes]:
    """``(unique ID, PROXY header)`` for a passed-through connection, as
    :meth:`tunnel.dataplane.passthrough.Passthrough._preamble` builds it: v2 says the SNI
    and JA4 and has no SSL TLV (Tunnel did not terminate). ``b""`` without a header."""
    options = target.proxy
    if options is None:
        return None, b""
    uid = os.urandom(UNIQUE_ID_BYTES) if options.unique_id else None
    facts = proxy_out.TLSFacts(sni=sni, ja4=fingerprint, terminated=False)
    header = proxy_out.build_header(
        options, tcp_addr(peer), tcp_addr(local), facts, unique_id=uid, balancer_tlvs=tlvs
    )
    return uid, header


def summary_fields(
    runtime: ListenerRuntime,
    peer: str,
    sni: str | None,
    fingerprint: str | None,
    backend: Any,
) -> dict[str, str | int | float]:
    """The head of a passed-through connection's log line (the caller adds the rest)."""
    return {
        "peer": peer,
        "listener": runtime.name,
        "sni": sni or "-",
        "alpn": "-",
        "tls": "-",
        "cipher": "-",
        "resumed": "-",
        "group": "-",
        "ja4": fingerprint or "-",
        "passthrough": "yes",
        "backend": str(backend or "-"),
    }
