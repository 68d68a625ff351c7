"""The key exchange groups a listener offers, as ``tunnel check`` shows them.

OpenSSL has no call that lists a context's groups, so the list is read from where OpenSSL
itself writes it: the supported_groups extension of a ClientHello made by a client
context with the same ``curves`` setting (client and server use one default list). The
ClientHello is made in memory and parsed with :mod:`tunnel.wire.clienthello`.
"""

from __future__ import annotations

import contextlib
import ssl

from tunnel._native import openssl as _openssl
from tunnel.wire.clienthello import ClientHelloError, ClientHelloReader

# IANA TLS Supported Groups registry: the code points a name is shown for.
GROUP_NAMES = {
    0x0017: "P-256",
    0x0018: "P-384",
    0x0019: "P-521",
    0x001D: "X25519",
    0x001E: "X448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
    0x0200: "MLKEM512",
    0x0201: "MLKEM768",
    0x0202: "MLKEM1024",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
}


def group_name(code: int) -> str:
    """A group's name, or its code point in hex when it has none here."""
    return GROUP_NAMES.get(code, f"0x{code:04x}")


def effective_groups(curves: str | None) -> tuple[str, ...]:
    """The groups, in preference order, that a listener with this ``curves`` value offers.

    Empty when they cannot be read (the ctypes call is unavailable).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # so that every group can be offered
    if curves is not None:
        try:
            _openssl.set_groups(ctx, curves)
        except _openssl.OpenSSLCallError:
            return ()
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="groups.invalid")
    with contextlib.suppress(ssl.SSLWantReadError):  # no server: it waits for one
        obj.do_handshake()
    try:
        hello = ClientHelloReader().feed(outgoing.read())
    except ClientHelloError:
        return ()
    return tuple(group_name(code) for code in hello.groups) if hello is not None else ()
