"""The client's ClientHello, read before OpenSSL sees a byte of the connection.

:class:`ClientHelloFirst` is a part of :class:`tunnel.dataplane.relay.TLSSide`: while the
handshake has not started, the client's bytes go to a
:class:`tunnel.wire.clienthello.ClientHelloReader` (and are held while the hello is
incomplete); once it is complete, :meth:`ClientHelloFirst.on_client_hello` decides: give
the bytes to OpenSSL (terminate, the default), refuse the client, or hand the connection
over (SNI passthrough). Only the first flight pays for this: afterwards the reader is
dropped and the relay's hot paths do not look at it. A hello the reader cannot parse goes
to :meth:`ClientHelloFirst.hello_unreadable` (default: OpenSSL answers it, as before).
"""

from __future__ import annotations

from tunnel.dataplane.tls_endpoint import TLSEndpoint
from tunnel.wire.clienthello import ClientHello, ClientHelloError, ClientHelloReader

# Fatal TLS alerts of ours, in plaintext, for a client refused before OpenSSL saw a byte.
ALERT_HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"  # e.g. deny_ja4
ALERT_DECODE_ERROR = b"\x15\x03\x03\x00\x02\x02\x32"  # a ClientHello we cannot read
ALERT_INTERNAL_ERROR = b"\x15\x03\x03\x00\x02\x02\x50"  # no passthrough backend reached


class ClientHelloFirst(TLSEndpoint):
    """A server-side TLS endpoint that reads the ClientHello ahead of OpenSSL.

    ``_hello`` is the reader (None once done, or where no hello is expected) and ``_held``
    the bytes of an incomplete hello; the subclass sets both and provides ``_handshake``.
    """

    __slots__ = ("_held", "_hello")

    _hello: ClientHelloReader | None
    _held: bytes

    def _handshake(self) -> None:
        """Advance the handshake with what the incoming BIO holds (the subclass's)."""
        raise NotImplementedError

    # -- hooks ------------------------------------------------------------------------
    def on_client_hello(self, hello: ClientHello, data: memoryview | bytes) -> None:
        """The whole ClientHello has arrived in ``data`` (with any bytes sent after it).

        ``data`` may be a view of the shared read buffer: copy what must outlive the call.
        The default terminates TLS: OpenSSL gets the bytes. A subclass may refuse the
        client or hand the connection over (passthrough) instead.
        """
        self.start_tls(data)

    def hello_unreadable(self, error: ClientHelloError, data: memoryview | bytes) -> None:
        """The first bytes are not a ClientHello Tunnel can read (``data``: all of them).

        The default lets OpenSSL answer them as it always did (with the alert it chooses).
        """
        self.start_tls(data)

    # -- the reading ------------------------------------------------------------------
    def start_tls(self, data: memoryview | bytes) -> None:
        """Give the client's first bytes to OpenSSL and run the handshake."""
        self._in.write(data)
        self._handshake()

    def first_bytes(self, data: bytes) -> None:
        """Bytes that came before the handshake started (e.g. after an inbound PROXY header)."""
        if self._hello is not None:
            self._read_hello(data)
        else:
            self.start_tls(data)

    def _read_hello(self, chunk: memoryview | bytes) -> None:
        reader = self._hello
        assert reader is not None
        try:
            hello = reader.feed(chunk)
        except ClientHelloError as exc:
            self._hello = None
            self.hello_unreadable(exc, self._take_held(chunk))
            return
        if hello is None:
            self._held += chunk  # bounded: the reader refuses a hello over its limits
            return
        self._hello = None
        self.on_client_hello(hello, self._take_held(chunk))

    def _take_held(self, chunk: memoryview | bytes) -> memoryview | bytes:
        """Everything read so far; usually the one chunk itself (no copy)."""
        if not self._held:
            return chunk
        data, self._held = self._held + chunk, b""
        return data

    def _hello_to_openssl(self) -> None:
        """Input ends mid-ClientHello: OpenSSL gets what came, to answer it with its alert."""
        if self._hello is not None:
            self._hello = None
            self._in.write(self._held)
            self._held = b""
