"""PROXY protocol v1 and v2 headers built from addresses and TLVs (what Tunnel sends).

Import the public names from :mod:`tunnel.wire.proxy_protocol`. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final, Literal

from tunnel.wire.proxy_header import (
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    V2_FIXED,
    V2_SIGNATURE,
    InetAddr,
    IPAddr,
    crc32c_be,
)

_UNIX_PATH: Final = 108


def _inet(addr: InetAddr) -> tuple[IPAddr, int]:
    ip = ipaddress.ip_address(addr[0])
    port = addr[1]
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range 0..65535: {port!r}")
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        ip = mapped if mapped is not None else ipaddress.IPv6Address(ip.packed)  # drop %scope
    return ip, port


def _as_v6(ip: IPAddr) -> ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)


def _inet_pair(src: InetAddr, dst: InetAddr) -> tuple[bool, IPAddr, int, IPAddr, int]:
    """Resolve both ends to one family: IPv4 if both are (mapped) IPv4, else IPv6."""
    (sip, sport), (dip, dport) = _inet(src), _inet(dst)
    if sip.version == 4 and dip.version == 4:
        return True, sip, sport, dip, dport
    return False, _as_v6(sip), sport, _as_v6(dip), dport


def encode_v1(src: InetAddr | str | None, dst: InetAddr | str | None) -> bytes:
    """Encode a v1 (text) header; non-IP endpoints give ``PROXY UNKNOWN\\r\\n``."""
    if not isinstance(src, tuple) or not isinstance(dst, tuple):
        return b"PROXY UNKNOWN\r\n"
    is4, sip, sport, dip, dport = _inet_pair(src, dst)
    proto = "TCP4" if is4 else "TCP6"
    return f"PROXY {proto} {sip} {dip} {sport} {dport}\r\n".encode("ascii")


def _unix_path(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) > _UNIX_PATH:
        raise ValueError(f"unix socket path longer than {_UNIX_PATH} bytes: {path!r}")
    if b"\0" in raw and not raw.startswith(b"\0"):
        raise ValueError(f"NUL byte in unix socket path: {path!r}")
    return raw.ljust(_UNIX_PATH, b"\0")


def _tlv_bytes(type_: int, value: bytes) -> bytes:
    if not 0 <= type_ <= 0xFF:
        raise ValueError(f"TLV type out of range 0..255: {type_}")
    if len(value) > 0xFFFF:
        raise ValueError(f"TLV 0x{type_:02x} value longer than 65535 bytes")
    return bytes((type_,)) + len(value).to_bytes(2, "big") + value


def encode_v2(
    src: InetAddr | str | None,
    dst: InetAddr | str | None,
    tlvs: Sequence[tuple[int, bytes]] = (),
    *,
    crc32c: bool = False,
    command: Literal["PROXY", "LOCAL"] = "PROXY",
) -> bytes:
    """Encode a v2 (binary) header.

    Endpoints are ``(host, port)`` tuples (TCP over IPv4/IPv6; mixed families are
    sent as IPv6 with IPv4-mapped addresses), unix socket path strings, or
    ``None`` (AF_UNSPEC).  ``command="LOCAL"`` requires both to be ``None``.
    With ``crc32c=True`` a PP2_TYPE_CRC32C TLV covering the whole header is appended.
    """
    if command == "LOCAL":
        if src is not None or dst is not None:
            raise ValueError("a LOCAL header carries no addresses")
        fam, body = 0x00, bytearray()
    elif command != "PROXY":
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', not {command!r}")
    elif src is None or dst is None:
        fam, body = 0x00, bytearray()
    elif isinstance(src, str) and isinstance(dst, str):
        fam, body = 0x31, bytearray(_unix_path(src) + _unix_path(dst))
    elif isinstance(src, tuple) and isinstance(dst, tuple):
        is4, sip, sport, dip, dport = _inet_pair(src, dst)
        fam = 0x11 if is4 else 0x21
        body = bytearray(sip.packed + dip.packed + sport.to_bytes(2, "big"))
        body += dport.to_bytes(2, "big")
    else:
        raise ValueError(f"cannot mix address kinds: {src!r} -> {dst!r}")
    for type_, value in tlvs:
        if type_ == PP2_TYPE_CRC32C:
            raise ValueError("pass crc32c=True instead of a PP2_TYPE_CRC32C TLV")
        body += _tlv_bytes(type_, value)
    crc_at = V2_FIXED + len(body) + 3
    if crc32c:
        body += _tlv_bytes(PP2_TYPE_CRC32C, b"\0\0\0\0")
    if len(body) > 0xFFFF:
        raise ValueError("v2 header longer than 65535 bytes after the fixed part")
    ver_cmd = 0x21 if command == "PROXY" else 0x20
    out = bytearray(V2_SIGNATURE + bytes((ver_cmd, fam)) + len(body).to_bytes(2, "big"))
    out += body
    if crc32c:
        out[crc_at : crc_at + 4] = crc32c_be(out)
    return bytes(out)


def ssl_tlv(
    *,
    client_flags: int,
    verify: int,
    version: str | None = None,
    cn: str | None = None,
    cipher: str | None = None,
    sig_alg: str | None = None,
    key_alg: str | None = None,
) -> tuple[int, bytes]:
    """Build a PP2_TYPE_SSL TLV; sub-TLVs are included for fields that are not None."""
    if not 0 <= client_flags <= 0xFF or not 0 <= verify <= 0xFFFFFFFF:
        raise ValueError("client_flags must fit in 8 bits and verify in 32 bits")
    value = bytearray((client_flags,)) + verify.to_bytes(4, "big")
    for sub, text in (
        (PP2_SUBTYPE_SSL_VERSION, version),
        (PP2_SUBTYPE_SSL_CN, cn),
        (PP2_SUBTYPE_SSL_CIPHER, cipher),
        (PP2_SUBTYPE_SSL_SIG_ALG, sig_alg),
        (PP2_SUBTYPE_SSL_KEY_ALG, key_alg),
    ):
        if text is not None:
            value += _tlv_bytes(sub, text.encode("utf-8"))
    return PP2_TYPE_SSL, bytes(value)
