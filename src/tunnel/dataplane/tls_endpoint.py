"""One TLS endpoint over memory BIOs, used on both sides of a relayed connection.

Theory of operation
-------------------
:class:`TLSEndpoint` is an ``asyncio.BufferedProtocol`` that runs its own TLS layer: an
``ssl.SSLObject`` over two ``MemoryBIO`` objects, so this code decides when bytes hit the
socket. The client side (:class:`tunnel.dataplane.relay.TLSSide`, server role) and the
TLS-backend side (:class:`tunnel.dataplane.backend_tls.TLSBackendSide`, client role) are
both endpoints; what differs between them is only where plaintext goes and what an end
or an error means, which they say through one attribute and three hooks:

* ``sink``: where decrypted bytes go, by its ``write`` (the backend stream for the client
  side; the client side, which encrypts them for the client, for a TLS backend). An
  object rather than a hook method, so the hot path pays no extra call; the object
  itself rather than its bound ``write``, so a connection holds no method object.
* :meth:`_read_ended`: the peer sent close_notify (or the stream ended cleanly).
* :meth:`_read_failed`: a record did not decrypt; OpenSSL may have queued an alert.
* :meth:`_handshake_failed`: the handshake failed; OpenSSL's alert is queued.

The per-record work: ciphertext from the socket is written into the incoming BIO and
records are decrypted while the BIO holds bytes, without waiting for an
``SSLWantReadError`` (no exception on the hot path); plaintext of one socket read goes
on in one call. Handshake steps flush what OpenSSL wrote (flights, alerts) after each
step. Memory BIOs keep the capacity of the largest chunk they carried, so
:meth:`release_buffers` gives them back where they are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Protocol

from tunnel._native.bio import bio_capacity, trim_bio
from tunnel.observe.reasons import HandshakeFailure

# SSL_read returns at most one record (16 KiB of plaintext): asking for more only makes
# CPython allocate (and then shrink) a bigger bytes object on every call.
RECORD_SIZE = 16384


class Sink(Protocol):
    """Where an endpoint's decrypted bytes go."""

    def write(self, data: Any) -> None:
        """Take ``data`` (it is not used after the call returns)."""


class TLSEndpoint(asyncio.BufferedProtocol):
    """A socket protocol with its own TLS layer; subclasses say where plaintext goes."""

    __slots__ = ("_in", "_out", "_tls", "bytes_in", "sink", "sslobj", "transport")

    transport: asyncio.Transport
    sslobj: ssl.SSLObject
    sink: Sink | None  # where decrypted bytes go (set by the subclass)
    bytes_in: int  # plaintext received from this endpoint's peer

    def _start_tls(
        self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        """Create the TLS layer (called from ``connection_made``)."""
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        # The C-level object under the SSLObject: the per-chunk calls skip SSLObject's
        # Python wrappers (same methods, same behaviour; ``unwrap`` is ``shutdown``).
        self._tls = self.sslobj._sslobj  # type: ignore[attr-defined]

    # -- hooks ------------------------------------------------------------------------
    def _read_ended(self) -> None:
        """The peer closed its direction (close_notify)."""

    def _read_failed(self, exc: ssl.SSLError) -> None:
        """A record from the peer did not decrypt."""

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        """The handshake failed; OpenSSL's alert, if any, is queued in the outgoing BIO."""

    # -- TLS --------------------------------------------------------------------------
    def _flush(self) -> None:
        """Send what OpenSSL wrote (handshake flights, alerts, close_notify)."""
        if self._out.pending:
            self.transport.write(self._out.read())

    def _handshake_step(self) -> bool:
        """Advance the handshake with what arrived; True once it completed.

        What OpenSSL answered is flushed; a failure goes to :meth:`_handshake_failed`
        with OpenSSL's alert still queued (the hook flushes it, or not).
        """
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            self._handshake_failed(exc)
            return False
        self._flush()
        self.release_buffers()
        return True

    def _decrypt(self) -> None:
        """Decrypt what the incoming BIO holds and hand the plaintext on in one call."""
        incoming = self._in
        read = self._tls.read
        data = b""
        eof = False
        error: ssl.SSLError | None = None
        try:
            if incoming.pending:
                # A request usually fits one record: one read, no list, no join.
                data = read(RECORD_SIZE)
                # close_notify: CPython's read() returns b"" instead of raising
                # SSLZeroReturnError when only our side received a shutdown.
                eof = not data
                if incoming.pending and data:
                    chunks = [data]
                    try:
                        while incoming.pending:
                            more = read(RECORD_SIZE)
                            if not more:
                                eof = True
                                break
                            chunks.append(more)
                    finally:  # records decrypted before an error are still relayed
                        data = b"".join(chunks)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:
            error = exc
        if data:
            self.bytes_in += len(data)
            self.sink.write(data)  # type: ignore[union-attr]  # set before data flows
        if error is not None:
            self._read_failed(error)
            return
        if self._out.pending:  # alerts, KeyUpdate replies
            self.transport.write(self._out.read())
        if eof:
            self._read_ended()

    def _encrypt(self, data: Any) -> ssl.SSLError | None:
        """Encrypt ``data`` and send it in one socket write; the error if that failed."""
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            return exc
        self.transport.write(self._out.read())
        return None

    def _close_notify(self) -> None:
        """Send close_notify (the peer's may come later, or never)."""
        # SSLWantReadError: ours is sent; other errors: nothing more to say in TLS.
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._tls.shutdown()
        self._flush()

    def release_buffers(self) -> None:
        """Free the memory BIOs' buffers where they are empty (OpenSSL never shrinks them).

        A BIO keeps the capacity of the largest chunk that went through it, plus a third:
        the handshake flights (~1.6 KiB per connection) after the handshake, ~85 KiB after
        a 64 KiB chunk, ~340 KiB after a 256 KiB one. Called after the handshake and
        whenever the connection goes quiet. About 1 us per BIO: fine once per connection
        or quiet period, too dear per chunk (a chunk would then also allocate and fault in
        a fresh buffer).
        """
        trim_bio(self._in)
        trim_bio(self._out)

    def buffer_capacity(self) -> int:
        """Bytes the memory BIOs hold allocated (0 once given back): a memory figure."""
        return bio_capacity(self._in) + bio_capacity(self._out)


def describe(exc: BaseException) -> str:
    """A short human text for a TLS or socket error (``certificate verify failed``)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


# OpenSSL's reason codes (exact) for the handshake failures that have a label of their own.
_FAILURES = {
    HandshakeFailure.UNKNOWN_SNI: ("TLSV1_ALERT_UNRECOGNIZED_NAME", "TLSV1_UNRECOGNIZED_NAME"),
    HandshakeFailure.NO_SHARED_CIPHER: (
        "NO_SHARED_CIPHER",
        "NO_SHARED_GROUPS",
        "NO_SHARED_SIGNATURE_ALGORITHMS",
        "NO_SUITABLE_KEY_SHARE",
        "NO_SUITABLE_GROUPS",
        "NO_SUITABLE_SIGNATURE_ALGORITHM",
        "NO_SUITABLE_DIGEST_ALGORITHM",
        "NO_CIPHERS_AVAILABLE",
    ),
    HandshakeFailure.BAD_CLIENT_CERT: (
        "CERTIFICATE_VERIFY_FAILED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "NO_CERTIFICATES_RETURNED",
    ),
    HandshakeFailure.NOT_TLS: (
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "RECORD_LAYER_FAILURE",
    ),
    HandshakeFailure.UNSUPPORTED_VERSION: (
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "VERSION_TOO_LOW",
        "UNSUPPORTED_SSL_VERSION",
        "BAD_PROTOCOL_VERSION_NUMBER",
    ),
    HandshakeFailure.CLIENT_CLOSED: ("UNEXPECTED_EOF_WHILE_READING",),
}
_FAILURE_BY_CODE = {code: failure for failure, codes in _FAILURES.items() for code in codes}


def handshake_failure(exc: ssl.SSLError) -> HandshakeFailure:
    """The metric label of a failed handshake, from OpenSSL's reason code."""
    return _FAILURE_BY_CODE.get(str(exc.reason), HandshakeFailure.OTHER)


def failure_by_code(code: str) -> HandshakeFailure:
    """The metric label for OpenSSL reason code ``code`` (``NO_SHARED_CIPHER``), as above."""
    return _FAILURE_BY_CODE.get(code, HandshakeFailure.OTHER)
