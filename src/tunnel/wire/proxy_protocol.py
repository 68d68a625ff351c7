"""PROXY protocol v1 and v2 (HAProxy ``proxy-protocol.txt``): encode and decode.

Theory of operation
-------------------
This module does no I/O.  The *encoders* (:func:`encode_v1`, :func:`encode_v2`,
:func:`ssl_tlv`) turn addresses and TLVs into header bytes to send to a backend.
The *decoder* (:class:`ProxyDecoder`) is a small state machine fed with whatever
bytes arrive from a client, split in any way:

1. **detect** -- the first bytes must be a prefix of the v1 signature ``"PROXY "``
   or of the 12-byte v2 signature; anything else fails on the first byte that
   disagrees with both, so garbage is never buffered.
2. **v1** -- buffer until LF; the line (CRLF included) may be at most 107 bytes,
   and bare CR/LF, double spaces, bad addresses or ports are rejected.
3. **v2** -- once the 16-byte fixed part is in, version, command, family and
   length are checked (length against ``max_size`` and the family's address
   size) *before* the rest is buffered; then addresses and TLVs are parsed and
   a CRC32C TLV, if any, is verified.

``feed`` returns :data:`NEED_DATA` until the header is complete, then the
:class:`ProxyHeader`; bytes received after the header (e.g. a TLS ClientHello)
are kept in :attr:`ProxyDecoder.rest`.  While waiting, the buffer never holds
more than the header can be long.  Any malformed input raises
:class:`ProxyProtocolError` (a :class:`ValueError`: the sender's fault), and only that.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
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
_V2_FIXED: Final = 16  # signature + ver/cmd + fam + length
_UNIX_PATH: Final = 108

# fam byte -> (family name, address block size); DGRAM entries only valid for LOCAL.
_V2_FAMILIES: Final = {
    0x00: ("UNKNOWN", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX_DGRAM", 216),
}
_V1_PROTOS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
_V1_PROTO_ERROR: Final = "v1 header: protocol must be TCP4, TCP6 or UNKNOWN, got {!r}"
_PORT_RE: Final = re.compile(rb"0|[1-9][0-9]{0,4}")

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
        return None if value is None else _parse_ssl(value)


# ---------------------------------------------------------------- encoding


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
    crc_at = _V2_FIXED + len(body) + 3
    if crc32c:
        body += _tlv_bytes(PP2_TYPE_CRC32C, b"\0\0\0\0")
    if len(body) > 0xFFFF:
        raise ValueError("v2 header longer than 65535 bytes after the fixed part")
    ver_cmd = 0x21 if command == "PROXY" else 0x20
    out = bytearray(V2_SIGNATURE + bytes((ver_cmd, fam)) + len(body).to_bytes(2, "big"))
    out += body
    if crc32c:
        out[crc_at : crc_at + 4] = _crc32c_be(out)
    return bytes(out)


def _crc32c_be(data: bytes | bytearray) -> bytes:
    return crc32c(bytes(data)).to_bytes(4, "big")


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


# ---------------------------------------------------------------- decoding


def _scan_tlvs(buf: bytes, pos: int, end: int, what: str) -> list[tuple[int, int, int]]:
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


def _parse_ssl(value: bytes) -> SSLInfo:
    if len(value) < 5:
        raise ProxyProtocolError(f"PP2_TYPE_SSL TLV is {len(value)} bytes, needs at least 5")
    subs = tuple((t, value[a:b]) for t, a, b in _scan_tlvs(value, 5, len(value), "PP2_TYPE_SSL"))
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


def _v1_addr(raw: bytes, proto: bytes, which: str) -> str:
    try:
        text = raw.decode("ascii")
        if proto == b"TCP4":
            return str(ipaddress.IPv4Address(text))
        if "%" in text:  # scoped addresses are meaningless to the receiver
            raise ValueError(text)
        return str(ipaddress.IPv6Address(text))
    except ValueError:  # includes UnicodeDecodeError and AddressValueError
        raise ProxyProtocolError(
            f"v1 header: invalid {proto.decode()} {which} address {raw[:48]!r}"
        ) from None


def _v1_port(raw: bytes, which: str) -> int:
    if _PORT_RE.fullmatch(raw) is None or int(raw) > 0xFFFF:
        raise ProxyProtocolError(
            f"v1 header: invalid {which} port {raw[:16]!r} (decimal 0..65535 without leading zeros)"
        )
    return int(raw)


def _parse_v1(line: bytes) -> ProxyHeader:
    """Parse a complete v1 line, CRLF excluded (it starts with ``PROXY ``)."""
    parts = line.split(b" ")
    proto = parts[1]
    if proto == b"UNKNOWN":  # the spec says to ignore whatever follows
        return ProxyHeader(1, "PROXY", "UNKNOWN")
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(_V1_PROTO_ERROR.format(proto[:16]))
    if len(parts) != 6 or b"" in parts:
        raise ProxyProtocolError(
            "v1 header: expected 'PROXY <proto> <src> <dst> <sport> <dport>' "
            f"separated by single spaces, got {line!r}"
        )
    return ProxyHeader(
        1,
        "PROXY",
        "TCP4" if proto == b"TCP4" else "TCP6",
        src_addr=_v1_addr(parts[2], proto, "source"),
        src_port=_v1_port(parts[4], "source"),
        dst_addr=_v1_addr(parts[3], proto, "destination"),
        dst_port=_v1_port(parts[5], "destination"),
    )


def _unix_from(field: bytes) -> str:
    raw = field.rstrip(b"\0") if field[:1] == b"\0" else field.split(b"\0", 1)[0]
    return raw.decode("utf-8", "surrogateescape")


def _parse_v2(hdr: bytes, command: Literal["PROXY", "LOCAL"], fam: int) -> ProxyHeader:
    """Parse a complete v2 header whose 16-byte fixed part was already validated."""
    family, addr_len = _V2_FAMILIES[fam]
    spans = _scan_tlvs(hdr, _V2_FIXED + addr_len, len(hdr), "v2 header")
    tlvs = tuple((t, hdr[a:b]) for t, a, b in spans)
    crcs = [(a, b) for t, a, b in spans if t == PP2_TYPE_CRC32C]
    if crcs:
        (a, b), *others = crcs
        if others or b - a != 4:
            raise ProxyProtocolError("v2 header: CRC32C TLV must appear once with 4 bytes")
        if _crc32c_be(hdr[:a] + b"\0\0\0\0" + hdr[b:]) != hdr[a:b]:
            raise ProxyProtocolError("v2 header: CRC32C checksum mismatch")
    for t, value in tlvs:
        if t == PP2_TYPE_SSL:
            _parse_ssl(value)  # validate now so ProxyHeader.ssl_info() cannot fail later
    if command == "LOCAL" or family == "UNKNOWN":
        return ProxyHeader(2, command, "UNKNOWN", tlvs=tlvs)
    addrs = hdr[_V2_FIXED : _V2_FIXED + addr_len]
    if family == "UNIX":
        return ProxyHeader(
            2, command, "UNIX", _unix_from(addrs[:108]), None, _unix_from(addrs[108:]), None, tlvs
        )
    n = 4 if family == "TCP4" else 16
    ip: type[IPAddr] = ipaddress.IPv4Address if n == 4 else ipaddress.IPv6Address
    return ProxyHeader(
        2,
        command,
        "TCP4" if n == 4 else "TCP6",
        src_addr=str(ip(addrs[:n])),
        src_port=int.from_bytes(addrs[2 * n : 2 * n + 2], "big"),
        dst_addr=str(ip(addrs[n : 2 * n])),
        dst_port=int.from_bytes(addrs[2 * n + 2 : 2 * n + 4], "big"),
        tlvs=tlvs,
    )


class ProxyDecoder:
    """Incremental PROXY header decoder (v1 and v2); see the module docstring.

    ``max_size`` caps the total size of a v2 header (v1 is always at most 107 bytes).
    """

    __slots__ = (
        "_buf",
        "_command",
        "_error",
        "_fam",
        "_header",
        "_total",
        "_version",
        "max_size",
        "rest",
    )

    def __init__(self, max_size: int = 4096 + 16) -> None:
        if not _V2_FIXED + 216 <= max_size <= _V2_FIXED + 0xFFFF:
            raise ValueError(f"max_size must be in {_V2_FIXED + 216}..{_V2_FIXED + 0xFFFF}")
        self.max_size = max_size
        self.rest = b""
        """Bytes received after the header; they belong to the payload."""
        self._buf = bytearray()
        self._version = 0
        self._total = 0  # v2: full header size once the fixed part is known
        self._command: Literal["PROXY", "LOCAL"] = "PROXY"
        self._fam = 0
        self._header: ProxyHeader | None = None
        self._error: ProxyProtocolError | None = None

    @property
    def header(self) -> ProxyHeader | None:
        """The decoded header, once :meth:`feed` has returned it."""
        return self._header

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of the header (never above the cap)."""
        return len(self._buf)

    def feed(self, data: bytes) -> FeedResult:
        """Add received bytes; return the header when complete, else :data:`NEED_DATA`.

        Raises :class:`ProxyProtocolError` on malformed input (and again on any
        later call).  After the header is returned, further bytes belong to the
        payload and must not be fed here.
        """
        if self._error is not None:
            raise ProxyProtocolError(str(self._error))
        if self._header is not None:
            raise RuntimeError("ProxyDecoder.feed() called after the header was decoded")
        self._buf += data
        try:
            return self._step()
        except ProxyProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise

    def _finish(self, header: ProxyHeader, size: int) -> ProxyHeader:
        self._header = header
        self.rest = bytes(self._buf[size:])
        self._buf = bytearray()
        return header

    def _step(self) -> FeedResult:
        buf = self._buf
        if self._version == 0:
            if buf[:6] == V1_SIGNATURE:
                self._version = 1
            elif buf[:12] == V2_SIGNATURE:
                self._version = 2
            elif V1_SIGNATURE.startswith(buf[:6]) or V2_SIGNATURE.startswith(buf[:12]):
                return NEED_DATA
            else:
                raise ProxyProtocolError(
                    f"not a PROXY protocol header: starts with {bytes(buf[:12])!r}"
                )
        return self._step_v1(buf) if self._version == 1 else self._step_v2(buf)

    def _step_v1(self, buf: bytearray) -> FeedResult:
        lf = buf.find(b"\n", 0, V1_MAX_LENGTH)
        if lf < 0 and len(buf) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        cr = buf.find(b"\r", 0, len(buf) - 1 if lf < 0 else lf - 1)  # CR only before LF
        if cr >= 0:
            raise ProxyProtocolError(f"v1 header: CR not followed by LF at offset {cr}")
        if lf >= 0 and buf[lf - 1] != 0x0D:
            raise ProxyProtocolError("v1 header: line ends with a bare LF, CRLF required")
        tail = bytes(buf[6:14])  # fail fast on the protocol word, before the LF
        if not any(p.startswith(tail) or tail.startswith(p) for p in _V1_PROTOS):
            raise ProxyProtocolError(_V1_PROTO_ERROR.format(tail))
        if lf < 0:
            return NEED_DATA
        return self._finish(_parse_v1(bytes(buf[: lf - 1])), lf + 1)

    def _step_v2(self, buf: bytearray) -> FeedResult:
        if len(buf) < _V2_FIXED:
            return NEED_DATA
        if not self._total:
            ver_cmd, fam = buf[12], buf[13]
            if ver_cmd >> 4 != 2:
                raise ProxyProtocolError(f"v2 header: unsupported version {ver_cmd >> 4}")
            if ver_cmd & 0xF > 1:
                raise ProxyProtocolError(f"v2 header: unknown command 0x{ver_cmd & 0xF:x}")
            self._command = "PROXY" if ver_cmd & 0xF else "LOCAL"
            if fam not in _V2_FAMILIES:
                raise ProxyProtocolError(f"v2 header: invalid family/protocol byte 0x{fam:02x}")
            family, addr_len = _V2_FAMILIES[fam]
            if self._command == "PROXY" and family not in ("TCP4", "TCP6", "UNIX", "UNKNOWN"):
                raise ProxyProtocolError(f"v2 header: datagram transport ({family}) not supported")
            length = int.from_bytes(buf[14:16], "big")
            if _V2_FIXED + length > self.max_size:
                raise ProxyProtocolError(
                    f"v2 header: length {length} exceeds limit of {self.max_size - _V2_FIXED}"
                )
            if length < addr_len:
                raise ProxyProtocolError(
                    f"v2 header: length {length} too short for {family} addresses ({addr_len})"
                )
            self._fam, self._total = fam, _V2_FIXED + length
        if len(buf) < self._total:
            return NEED_DATA
        header = _parse_v2(bytes(buf[: self._total]), self._command, self._fam)
        return self._finish(header, self._total)


def decode(data: bytes, max_size: int = 4096 + 16) -> tuple[ProxyHeader, bytes]:
    """Decode a header that must be complete in *data*; return it and the trailing bytes."""
    decoder = ProxyDecoder(max_size)
    result = decoder.feed(data)
    if result is NEED_DATA:
        raise ProxyProtocolError(f"incomplete PROXY header ({len(data)} bytes)")
    return result, decoder.rest
