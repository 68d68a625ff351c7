"""The compiled plane's listener policies, decided in Python once per connection (no I/O).

* At accept (:meth:`Policy.accept`, only on listeners with per-IP caps or rates): the
  shared per-IP rates, then the per-worker per-IP caps, in the Python plane's order
  (:meth:`tunnel.dataplane.connection.ClientConnection.admitted`). A refused connection is
  closed by C before any TLS byte.
* At handshake-done and close: the handshake token of a resumed session goes back to its
  rate bucket, and the caps count the connection out, as the Python plane does.
* At the ClientHello (:meth:`Policy.hello`, only on listeners with ``deny_ja4``): C hands
  over the message it copied, before OpenSSL parses it; a listed JA4, or a hello the
  Python plane's reader would refuse, gets the same plaintext alert and close reason as
  on the Python plane (:mod:`tunnel.dataplane.hello`), whatever OpenSSL made of it. First
  bytes that cannot start a ClientHello (seen by C before OpenSSL reads them) go to
  :meth:`Policy.first_bytes` for the reader's verdict and words.
"""

from __future__ import annotations

import os
from typing import Any

from tunnel.dataplane.fastplane_facts import hello_ja4
from tunnel.dataplane.listener import ListenerRuntime
from tunnel.observe.reasons import CloseReason
from tunnel.wire.clienthello import (
    DEFAULT_LIMIT,
    MAX_RECORDS,
    ClientHelloError,
    ClientHelloReader,
    parse_handshake_message,
)
from tunnel.wire.ja4 import ja4

# Refusals that have a summary line (once a second) rather than a log line each.
SUMMARIZED = frozenset({CloseReason.RATE_LIMITED, CloseReason.IP_LIMITED})

# The alert descriptions C sends in a plaintext TLS 1.2 alert record (hello.py's bytes).
ALERT_HANDSHAKE_FAILURE = 0x28
ALERT_DECODE_ERROR = 0x32


class Policy:
    """The per-connection policy state of one compiled plane (by connection id)."""

    __slots__ = ("_ips", "_rate_keys", "bad_hello", "fingerprints")

    def __init__(self) -> None:
        # Connections counted by the per-IP caps: id -> [address, handshake ended].
        self._ips: dict[int, list[Any]] = {}
        # Connections admitted by a shared rate bucket: id -> the bucket's key.
        self._rate_keys: dict[int, int] = {}
        self.bad_hello: set[int] = set()  # refused for a ClientHello the reader refuses
        # The JA4 deny_ja4 computed for a hello it let through, by connection, until the
        # handshake is done (or the connection ends): a PROXY TLV or the log line takes it
        # from here instead of parsing the hello again.
        self.fingerprints: dict[int, str] = {}

    def accept(
        self, runtime: ListenerRuntime, cid: int, peer: tuple[str, int] | None
    ) -> CloseReason | None:
        """Check the shared rates, then count the connection in the caps: None, or why it
        is refused (the socket's peer at accept, or a balancer's header's client)."""
        rates = runtime.rates
        if rates is not None:
            key = rates.admit(peer)  # counts a refusal and its summary line itself
            if key is None:
                return CloseReason.RATE_LIMITED
            if key:
                self._rate_keys[cid] = key
        limits = runtime.per_ip
        if limits is None or peer is None:
            return None  # no cap, or not an IP peer: nothing to count
        if limits.admit(peer[0]):
            self._ips[cid] = [peer[0], False]
            return None
        runtime.stats.ip_refused += 1
        self._rate_keys.pop(cid, None)  # its token stays taken, as on the Python plane
        return CloseReason.IP_LIMITED

    def handshake_done(self, runtime: ListenerRuntime, cid: int, resumed: bool) -> None:
        """Only full handshakes count against the handshake rate; the caps' handshake ends."""
        key = self._rate_keys.pop(cid, 0)
        if key and resumed and runtime.rates is not None:
            runtime.rates.resumed(key)
        self._handshake_ended(runtime, cid)

    def closed(self, runtime: ListenerRuntime, cid: int) -> None:
        """The connection is gone: out of the caps (and of the handshake count if pending)."""
        self._rate_keys.pop(cid, None)
        self._handshake_ended(runtime, cid)
        entry = self._ips.pop(cid, None)
        if entry is not None and runtime.per_ip is not None:
            runtime.per_ip.connection_ended(entry[0])

    def _handshake_ended(self, runtime: ListenerRuntime, cid: int) -> None:
        entry = self._ips.get(cid)
        if entry is not None and not entry[1] and runtime.per_ip is not None:
            entry[1] = True
            runtime.per_ip.handshake_ended(entry[0])

    def hello(
        self,
        runtime: ListenerRuntime,
        cid: int,
        message: bytes | None,
        length: int,
        records: int = 1,
    ) -> tuple[int, str] | None:
        """deny_ja4 on the client's first ClientHello ``message`` (None: C did not keep it,
        being ``length`` bytes), which came in ``records`` TLS records: None to go on,
        else (alert, close reason) to refuse."""
        if records > MAX_RECORDS:
            return self.unreadable(
                runtime, cid, f"ClientHello split into over {MAX_RECORDS} records"
            )
        if message is None:
            # Only a hello over the reader's limit is not kept (HELLO_LIMIT in fastplane.h).
            error = f"ClientHello of {max(length - 4, 0)} bytes: more than {DEFAULT_LIMIT}"
            return self.unreadable(runtime, cid, error)
        fingerprint = hello_ja4(message)
        if fingerprint is None:  # refused (rare): Python's reader says why
            try:
                fingerprint = ja4(parse_handshake_message(message))
            except ClientHelloError as exc:
                return self.unreadable(runtime, cid, str(exc))
        if fingerprint in runtime.deny_ja4:
            runtime.stats.denied["ja4"] += 1
            return ALERT_HANDSHAKE_FAILURE, f"denied: ja4 {fingerprint}"
        self.fingerprints[cid] = fingerprint
        return None

    def first_bytes(
        self, runtime: ListenerRuntime, cid: int, data: bytes
    ) -> tuple[int, str] | None:
        """deny_ja4 on the first bytes of a connection (C asks only for bytes that look
        wrong): None to go on, else the reader's refusal (alert, close reason)."""
        try:
            ClientHelloReader().feed(data)
        except ClientHelloError as exc:
            return self.unreadable(runtime, cid, str(exc))
        return None

    def took_bad_hello(self, cid: int) -> bool:
        """Was ``cid`` refused for its ClientHello (forgotten here once asked)?"""
        if cid in self.bad_hello:
            self.bad_hello.discard(cid)
            return True
        return False

    def unreadable(self, runtime: ListenerRuntime, cid: int, error: str) -> tuple[int, str]:
        """The Python plane refuses a hello it cannot read where a JA4 policy is set."""
        self.bad_hello.add(cid)
        return ALERT_DECODE_ERROR, f"handshake failed: bad ClientHello: {error}"


def keylog_fd(runtime: ListenerRuntime) -> int:
    """A descriptor appending to the listener's ``keylog_file``, or -1 without one.

    The file was created 0600 (or narrowed to it) and given its header when the context
    was built (:func:`tunnel.tls.secret_files.set_keylog`); C appends one line per secret.
    """
    path = runtime.config.keylog_file
    if path is None:
        return -1
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
