"""PROXY protocol v1 and v2 headers decoded from bytes as they arrive (what Tunnel reads).

:class:`ProxyDecoder` is the state machine the :mod:`tunnel.wire.proxy_protocol`
docstring describes; import the public names from there. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal

from tunnel.wire.proxy_header import (
    NEED_DATA,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    V1_MAX_LENGTH,
    V1_SIGNATURE,
    V2_FAMILIES,
    V2_FIXED,
    V2_SIGNATURE,
    FeedResult,
    IPAddr,
    ProxyHeader,
    ProxyProtocolError,
    crc32c_be,
    parse_ssl_tlv,
    scan_tlvs,
)

_V1_PROTOS: Final = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
_V1_PROTO_ERROR: Final = "v1 header: protocol must be TCP4, TCP6 or UNKNOWN, got {!r}"
_PORT_RE: Final = re.compile(rb"0|[1-9][0-9]{0,4}")


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
    family, addr_len = V2_FAMILIES[fam]
    spans = scan_tlvs(hdr, V2_FIXED + addr_len, len(hdr), "v2 header")
    tlvs = tuple((t, hdr[a:b]) for t, a, b in spans)
    crcs = [(a, b) for t, a, b in spans if t == PP2_TYPE_CRC32C]
    if crcs:
        (a, b), *others = crcs
        if others or b - a != 4:
            raise ProxyProtocolError("v2 header: CRC32C TLV must appear once with 4 bytes")
        if crc32c_be(hdr[:a] + b"\0\0\0\0" + hdr[b:]) != hdr[a:b]:
            raise ProxyProtocolError("v2 header: CRC32C checksum mismatch")
    for t, value in tlvs:
        if t == PP2_TYPE_SSL:
            parse_ssl_tlv(value)  # validate now so ProxyHeader.ssl_info() cannot fail later
    if command == "LOCAL" or family == "UNKNOWN":
        return ProxyHeader(2, command, "UNKNOWN", tlvs=tlvs)
    addrs = hdr[V2_FIXED : V2_FIXED + addr_len]
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
        if not V2_FIXED + 216 <= max_size <= V2_FIXED + 0xFFFF:
            raise ValueError(f"max_size must be in {V2_FIXED + 216}..{V2_FIXED + 0xFFFF}")
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
        if len(buf) < V2_FIXED:
            return NEED_DATA
        if not self._total:
            ver_cmd, fam = buf[12], buf[13]
            if ver_cmd >> 4 != 2:
                raise ProxyProtocolError(f"v2 header: unsupported version {ver_cmd >> 4}")
            if ver_cmd & 0xF > 1:
                raise ProxyProtocolError(f"v2 header: unknown command 0x{ver_cmd & 0xF:x}")
            self._command = "PROXY" if ver_cmd & 0xF else "LOCAL"
            if fam not in V2_FAMILIES:
                raise ProxyProtocolError(f"v2 header: invalid family/protocol byte 0x{fam:02x}")
            family, addr_len = V2_FAMILIES[fam]
            if self._command == "PROXY" and family not in ("TCP4", "TCP6", "UNIX", "UNKNOWN"):
                raise ProxyProtocolError(f"v2 header: datagram transport ({family}) not supported")
            length = int.from_bytes(buf[14:16], "big")
            if V2_FIXED + length > self.max_size:
                raise ProxyProtocolError(
                    f"v2 header: length {length} exceeds limit of {self.max_size - V2_FIXED}"
                )
            if length < addr_len:
                raise ProxyProtocolError(
                    f"v2 header: length {length} too short for {family} addresses ({addr_len})"
                )
            self._fam, self._total = fam, V2_FIXED + length
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
