"""PROXY protocol headers as values: the constants, :class:`ProxyHeader`, its TLVs.

Shared by the encoder (:mod:`tunnel.wire.proxy_encode`) and the decoder
(:mod:`tunnel.wire.proxy_decode`); import the public names from
:mod:`tunnel.wire.proxy_protocol`. Pure: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

PP2_TYPE_ALPN: Final = 0x01
PP2_TYPE_AUTHORITY: Final = 0x02
PP2_TYPE_CRC32C: Final = 0x03
PP2_TYPE_NOOP: Final = 0x04
PP2_TYPE_UNIQUE_ID: Final = 0x05
PP2_TYPE_SSL: Final = 0x20
PP2_SUBTYPE_SSL_VERSION: Final = 0x21
PP2_SUBTYPE_SSL_CN: Final = 0x22
PP2_SUBTYPE_SSL_CIPHER: Final = 0x23
PP2_SUBTYPE_SSL_SIG_ALG: Final = 0x24
PP2_SUBTYPE_SSL_KEY_ALG: Final = 0x25
PP2_TYPE_NETNS: Final = 0x30

PP2_CLIENT_SSL: Final = 0x01
PP2_CLIENT_CERT_CONN: Final = 0x02
PP2_CLIENT_CERT_SESS: Final = 0x04

V1_SIGNATURE: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_LENGTH: Final = 107  # worst case line, CRLF included (spec section 2.1)
V2_FIXED: Final = 16  # signature + ver/cmd + fam + length

# fam byte -> (family name, address block size); DGRAM entries only valid for LOCAL.
V2_FAMILIES: Final = {
    0x00: ("UNKNOWN", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX_DGRAM", 216),
}

InetAddr: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
"""``(host, port)``, or an asyncio IPv6 peername ``(host, port, flowinfo, scope_id)``."""
IPAddr: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProxyProtocolError(ValueError):
    """The client sent a missing, malformed or unsupported PROXY protocol header."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned by :meth:`ProxyDecoder.feed` while the header is still incomplete."""
FeedResult: TypeAlias = "ProxyHeader | Literal[_NeedData.NEED_DATA]"


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # reflected Castagnoli poly
        table.append(c)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of *data*, as used by the PP2_TYPE_CRC32C TLV."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SSLInfo:
    """Contents of a PP2_TYPE_SSL TLV: how the client reached the proxy."""

    client_flags: int
    verify: int  # 0 if the client certificate was presented and verified
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    sub_tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def ssl(self) -> bool:
        """The client connected over SSL/TLS."""
        return bool(self.client_flags & PP2_CLIENT_SSL)

    @property
    def cert_conn(self) -> bool:
        """The client presented a certificate over this connection."""
        return bool(self.client_flags & PP2_CLIENT_CERT_CONN)

    @property
    def cert_sess(self) -> bool:
        """The client presented a certificate at least once in this TLS session."""
        return bool(self.client_flags & PP2_CLIENT_CERT_SESS)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded PROXY header; addresses are ``None`` for LOCAL and UNKNOWN."""

    version: Literal[1, 2]
    command: Literal["PROXY", "LOCAL"]
    family: Literal["TCP4", "TCP6", "UNIX", "UNKNOWN"]
    src_addr: str | None = None
    src_port: int | None = None
    dst_addr: str | None = None
    dst_port: int | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, type_: int) -> bytes | None:
        """Value of the first TLV of type *type_*, or ``None``."""
        for t, value in self.tlvs:
            if t == type_:
                return value
        return None

    def ssl_info(self) -> SSLInfo | None:
        """Parse the PP2_TYPE_SSL TLV, or ``None`` if there is none."""
        value = self.tlv(PP2_TYPE_SSL)
        return None if value is None else parse_ssl_tlv(value)


def crc32c_be(data: bytes | bytearray) -> bytes:
    """CRC-32C of *data* as the 4 big-endian bytes of a PP2_TYPE_CRC32C value."""
    return crc32c(bytes(data)).to_bytes(4, "big")


def scan_tlvs(buf: bytes, pos: int, end: int, what: str) -> list[tuple[int, int, int]]:
    """``(type, value_start, value_end)`` of each TLV in ``buf[pos:end]``."""
    found = []
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(f"{what}: {end - pos} trailing byte(s), too short for a TLV")
        type_, length = buf[pos], int.from_bytes(buf[pos + 1 : pos + 3], "big")
        start = pos + 3
        pos = start + length
        if pos > end:
            raise ProxyProtocolError(
                f"{what}: TLV 0x{type_:02x} declares {length} bytes, only {end - start} left"
            )
        found.append((type_, start, pos))
    return found


def parse_ssl_tlv(value: bytes) -> SSLInfo:
    """Decode a PP2_TYPE_SSL value; ProxyProtocolError if malformed."""
    if len(value) < 5:
        raise ProxyProtocolError(f"PP2_TYPE_SSL TLV is {len(value)} bytes, needs at least 5")
    subs = tuple((t, value[a:b]) for t, a, b in scan_tlvs(value, 5, len(value), "PP2_TYPE_SSL"))
    text: dict[int, str] = {}
    for t, v in subs:
        if PP2_SUBTYPE_SSL_VERSION <= t <= PP2_SUBTYPE_SSL_KEY_ALG and t not in text:
            text[t] = v.decode("utf-8", "replace")
    return SSLInfo(
        client_flags=value[0],
        verify=int.from_bytes(value[1:5], "big"),
        version=text.get(PP2_SUBTYPE_SSL_VERSION),
        cn=text.get(PP2_SUBTYPE_SSL_CN),
        cipher=text.get(PP2_SUBTYPE_SSL_CIPHER),
        sig_alg=text.get(PP2_SUBTYPE_SSL_SIG_ALG),
        key_alg=text.get(PP2_SUBTYPE_SSL_KEY_ALG),
        sub_tlvs=subs,
    )
