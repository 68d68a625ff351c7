"""JA4: the FoxIO TLS client fingerprint of a ClientHello (``t13d1516h2_8daaf6152771_...``).

Pure. Three parts joined by ``_``:

a. ``t`` (TLS over TCP), the version (the highest of supported_versions, else the
   ClientHello's version: ``13``, ``12``, ...), ``d`` with an SNI extension or ``i``
   without, the number of cipher suites and of extensions (two digits each, at most 99),
   and the first and last characters of the first ALPN protocol (``00`` without one).
b. The first 12 hex digits of the SHA-256 of the cipher suites, as 4-digit lower-case hex,
   sorted, comma separated.
c. The same of the extension types sorted (SNI and ALPN left out, as part a has them),
   then ``_`` and the signature algorithms in the client's order (no ``_`` without them).

GREASE values (RFC 8701, ``0x?a?a``) are ignored everywhere, so they and the order of the
extensions (which browsers shuffle) do not change the fingerprint.
"""

from __future__ import annotations

import hashlib
import struct
from itertools import filterfalse
from typing import Final

from tunnel.wire.clienthello import (
    EXT_ALPN,
    EXT_SERVER_NAME,
    ClientHello,
    ClientHelloError,
    parse_handshake_message,
)

_VERSIONS: Final = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
}
_EMPTY_HASH: Final = "000000000000"


GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))


_IS_GREASE = GREASE.__contains__
_IN_PART_A = frozenset({EXT_SERVER_NAME, EXT_ALPN}).__contains__  # not in the extension hash


def is_grease(value: int) -> bool:
    """Whether a 16-bit code point is a GREASE value (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return value in GREASE


def _hash(text: str) -> str:
    if not text:
        return _EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _hex_list(values: list[int] | tuple[int, ...]) -> str:
    """``0x2f, 0x1301`` -> ``002f,1301`` (packed and hex-encoded in C: no call per value)."""
    return struct.pack(f">{len(values)}H", *values).hex(",", 2)


def alpn_chars(first: bytes | None) -> str:
    """The two ALPN characters: the first protocol's first and last byte, ``00`` without one.

    When either end is not an ASCII letter or digit, the spec takes the first and last
    digit of the protocol's hex form instead (``0xab 0xcd`` gives ``ad``).
    """
    if not first:
        return "00"
    head, tail = chr(first[0]), chr(first[-1])
    if head.isascii() and head.isalnum() and tail.isascii() and tail.isalnum():
        return head + tail
    text = first.hex()
    return text[0] + text[-1]


def ja4_raw(hello: ClientHello) -> str:
    """JA4_r: part a, then the lists that JA4 hashes, unhashed (for logs and debugging)."""
    part_a, ciphers, extensions = _parts(hello)
    return f"{part_a}_{ciphers}_{extensions}"


def ja4(hello: ClientHello) -> str:
    """The JA4 fingerprint of a ClientHello received over TCP."""
    part_a, ciphers, extensions = _parts(hello)
    return f"{part_a}_{_hash(ciphers)}_{_hash(extensions)}"


def message_ja4(message: bytes | None) -> str | None:
    """The JA4 of a ClientHello handshake message (header included); None without one, or
    for one the reader refuses (as the Python plane logs no JA4 for it either)."""
    if message is None:
        return None
    try:
        return ja4(parse_handshake_message(message))
    except ClientHelloError:
        return None


def _without_grease(values: tuple[int, ...]) -> list[int]:
    # filterfalse runs the membership test in C: no Python step per value.
    return list(filterfalse(_IS_GREASE, values))


def _parts(hello: ClientHello) -> tuple[str, str, str]:
    versions = _without_grease(hello.supported_versions)
    version = max(versions) if versions else hello.legacy_version
    ciphers = _without_grease(hello.ciphers)
    extensions = _without_grease(hello.extensions)
    part_a = "t{}{}{:02d}{:02d}{}".format(
        _VERSIONS.get(version, "00"),
        "d" if EXT_SERVER_NAME in extensions else "i",
        min(len(ciphers), 99),
        min(len(extensions), 99),
        alpn_chars(hello.alpn[0] if hello.alpn else None),
    )
    listed = _hex_list(sorted(filterfalse(_IN_PART_A, extensions)))
    signatures = _without_grease(hello.signature_algorithms)
    if listed and signatures:
        listed += "_" + _hex_list(signatures)
    ciphers.sort()
    return part_a, _hex_list(ciphers), listed
