"""ClientHello bytes for the parser tests: TLS vectors by hand, and real first flights.

:func:`u16`, :func:`vec` and :func:`ext` build the RFC 8446 4.1.2 layout piece by piece;
:func:`openssl_first_flight` is what Python's ssl module (OpenSSL) sends first, made over
memory BIOs (no socket), and :func:`record_message` the handshake message inside it.
"""

from __future__ import annotations

import contextlib
import ssl


def u16(value: int) -> bytes:
    """A 16-bit big-endian value."""
    return value.to_bytes(2, "big")


def vec(length_bytes: int, body: bytes) -> bytes:
    """``body`` after its length in ``length_bytes`` bytes (a TLS vector)."""
    return len(body).to_bytes(length_bytes, "big") + body


def ext(kind: int, body: bytes) -> bytes:
    """One extension: its type, then its body as a 2-byte vector."""
    return u16(kind) + vec(2, body)


def openssl_first_flight(
    server_name: str | None = "example.com",
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> bytes:
    """The records a default client context of the ssl module sends first."""
    ctx = ssl.create_default_context()
    if maximum is not None:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def record_message(flight: bytes) -> bytes:
    """The handshake message of the first record of ``flight`` (one-record hellos)."""
    assert flight[0] == 22, "not a handshake record"
    return flight[5 : 5 + int.from_bytes(flight[3:5], "big")]
