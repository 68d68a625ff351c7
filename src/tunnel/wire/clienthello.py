"""The TLS ClientHello, read incrementally from the record layer (RFC 8446 4.1.2, 5.1).

Theory of operation
-------------------
This module does no I/O. A :class:`ClientHelloReader` is fed whatever bytes a client sent
first, split in any way, and answers :data:`NEED_DATA` until the whole ClientHello message
has arrived, then a :class:`ClientHello` with what routing and fingerprinting need: the
versions, the cipher suites and extension types in wire order, the server name (SNI), the
ALPN list, the signature algorithms and the supported groups.

* Records: each must be a handshake record (type 22) of a TLS 1.x record version, with a
  length between 1 and 2^14 + 256 bytes; a ClientHello may span several records, and the
  records are checked one by one as their 5-byte headers arrive, so garbage fails on the
  first bytes and is never buffered.
* Size: the ClientHello message is at most ``limit`` bytes (checked as soon as its 4-byte
  header has arrived), and the reader never holds more than ``limit`` bytes of handshake
  data plus one record header.
* Bytes after the records that carried the ClientHello (a client may send its next flight
  at once) are not parsed: :attr:`ClientHelloReader.consumed` says where they start, so a
  relay that forwards everything knows where the hello ended.
* Any malformed or oversized input raises :class:`ClientHelloError` (a ``ValueError``:
  the client's fault), and only that; its message says what was wrong.

Nothing here trusts the client: every length is checked against what remains before it is
used, duplicate extensions are refused (RFC 8446 4.2), and names must be ASCII.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

NEED_DATA: Final = None

RECORD_HEADER: Final = 5
HANDSHAKE_RECORD: Final = 22
CLIENT_HELLO: Final = 1
MAX_RECORD: Final = 16384 + 256  # the most a TLS 1.2 peer may put in a plaintext record
DEFAULT_LIMIT: Final = 16384  # a ClientHello with a post-quantum key share is ~1.8 KiB
MAX_RECORDS: Final = 32  # records one ClientHello may span (real clients use one or two)

EXT_SERVER_NAME: Final = 0x0000
EXT_SUPPORTED_GROUPS: Final = 0x000A
EXT_SIGNATURE_ALGORITHMS: Final = 0x000D
EXT_ALPN: Final = 0x0010
EXT_SUPPORTED_VERSIONS: Final = 0x002B


class ClientHelloError(ValueError):
    """The client's first bytes are not a well-formed TLS ClientHello within the limit."""


class ClientHello(NamedTuple):
    """What a ClientHello offers. Lists keep the client's order, GREASE values included.

    A named tuple: made once per connection, and a tuple is the cheapest immutable record.
    """

    legacy_version: int
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    supported_versions: tuple[int, ...] = ()
    length: int = 0  # bytes of the handshake message, its 4-byte header included


class ClientHelloReader:
    """Feed the client's bytes; get :data:`NEED_DATA` until the ClientHello is complete.

    ``limit`` bounds the ClientHello message (and so the memory held). Once ``feed`` has
    returned the hello, :attr:`consumed` is the number of bytes (of everything fed) that the
    records carrying it took; later calls return the same hello.
    """

    __slots__ = ("_handshake", "_header", "_hello", "_need", "_records", "consumed", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.consumed = 0
        self._header = bytearray()  # a record header being received
        self._need = 0  # bytes of the current record's body still to come
        self._records = 0
        self._handshake = bytearray()  # handshake bytes so far (record bodies, joined)
        self._hello: ClientHello | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """Take the next bytes; the hello once complete, else :data:`NEED_DATA`."""
        if self._hello is not None:
            return self._hello
        if not self.consumed and not self._header:
            hello = self._whole(data)
            if hello is not None:
                return hello
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._need == 0:
                take = min(RECORD_HEADER - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                self._check_header()
                if len(self._header) < RECORD_HEADER:
                    break
                self.consumed += RECORD_HEADER
                self._records += 1
                if self._records > MAX_RECORDS:
                    # Each record costs 5 bytes of header: bound what a caller holds too.
                    raise ClientHelloError(f"ClientHello split into over {MAX_RECORDS} records")
                self._need = int.from_bytes(self._header[3:5], "big")
                self._header.clear()
                continue
            # Take no byte beyond the end of the hello message, so the buffer stays bounded
            # by the limit whatever the record sizes.
            take = min(self._need, end - pos, self._wanted())
            self._handshake += view[pos : pos + take]
            pos += take
            self._need -= take
            self.consumed += take
            hello = self._try_parse()
            if hello is not None:
                # The rest of this record, if any, came with the hello: the caller's to relay.
                self.consumed += self._need
                self._hello = hello
                return hello
        return NEED_DATA

    def _whole(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """The usual case, without copies: one record that holds the whole hello."""
        if len(data) < 9 or data[0] != HANDSHAKE_RECORD or data[1] != 3 or data[5] != 1:
            return None
        record = data[3] << 8 | data[4]
        length = data[6] << 16 | data[7] << 8 | data[8]
        if record > MAX_RECORD or length + 4 > record or len(data) < 5 + record:
            return None  # the general path checks it (and says what is wrong)
        if length > self.limit:
            raise ClientHelloError(f"ClientHello of {length} bytes: more than {self.limit}")
        self._hello = parse_client_hello(bytes(data[9 : 9 + length]))
        self.consumed = 5 + record
        return self._hello

    def _wanted(self) -> int:
        """Handshake bytes still needed: up to the 4-byte header, then up to the message end."""
        buf = self._handshake
        if len(buf) < 4:
            return 4 - len(buf)
        return 4 + int.from_bytes(buf[1:4], "big") - len(buf)

    def _check_header(self) -> None:
        header = self._header
        if header[0] != HANDSHAKE_RECORD:
            if header[0] & 0x80:
                raise ClientHelloError("SSLv2-style hello: not supported (TLS 1.x only)")
            raise ClientHelloError(f"first byte 0x{header[0]:02x} is not a TLS handshake record")
        if len(header) >= 2 and header[1] != 3:
            raise ClientHelloError(f"TLS record version major {header[1]}: not TLS")
        if len(header) == RECORD_HEADER:
            length = int.from_bytes(header[3:5], "big")
            if length == 0 or length > MAX_RECORD:
                raise ClientHelloError(f"bad TLS record length {length}")

    def _try_parse(self) -> ClientHello | None:
        buf = self._handshake
        if len(buf) < 4:
            return None
        if buf[0] != CLIENT_HELLO:
            raise ClientHelloError(f"first handshake message is type {buf[0]}, not ClientHello")
        length = int.from_bytes(buf[1:4], "big")
        if length > self.limit:
            raise ClientHelloError(f"ClientHello of {length} bytes: more than {self.limit}")
        if len(buf) < 4 + length:
            return None
        hello = parse_client_hello(bytes(buf[4:]))
        self._handshake = bytearray()  # not needed any more
        return hello


def parse_handshake_message(message: bytes, limit: int = DEFAULT_LIMIT) -> ClientHello:
    """Parse one whole ClientHello handshake message, its 4-byte header included (what a
    TLS library's message callback hands over, without the records around it)."""
    if len(message) < 4:
        raise ClientHelloError(f"{_TRUNCATED}: {len(message)} bytes, no handshake header")
    if message[0] != CLIENT_HELLO:
        raise ClientHelloError(f"handshake message is type {message[0]}, not ClientHello")
    length = int.from_bytes(message[1:4], "big")
    if length > limit:
        raise ClientHelloError(f"ClientHello of {length} bytes: more than {limit}")
    if length != len(message) - 4:
        raise ClientHelloError(f"ClientHello says {length} bytes but has {len(message) - 4}")
    return parse_client_hello(message[4:])


_TRUNCATED = "ClientHello truncated"


def _u16s(data: bytes, start: int, length: int, what: str) -> tuple[int, ...]:
    """``length`` bytes of 16-bit values from ``start`` (bounds checked by the caller)."""
    if length % 2 or not length:
        raise ClientHelloError(f"bad {what} list length {length}")
    return struct.unpack_from(f">{length >> 1}H", data, start)


def _u16_vector(data: bytes, what: str) -> tuple[int, ...]:
    """A 2-byte-length vector of 16-bit values that fills the whole extension."""
    if len(data) < 2 or (data[0] << 8 | data[1]) != len(data) - 2:
        raise ClientHelloError(f"malformed {what} extension")
    return _u16s(data, 2, len(data) - 2, what)


def _server_name(data: bytes) -> str:
    if len(data) < 2 or (data[0] << 8 | data[1]) != len(data) - 2 or len(data) == 2:
        raise ClientHelloError("malformed server_name extension")
    pos, end = 2, len(data)
    host: str | None = None
    while pos < end:
        if pos + 3 > end:
            raise ClientHelloError(f"{_TRUNCATED} in server_name")
        kind, length = data[pos], data[pos + 1] << 8 | data[pos + 2]
        pos += 3
        if pos + length > end:
            raise ClientHelloError(f"{_TRUNCATED} in server_name")
        name = data[pos : pos + length]
        pos += length
        if kind != 0:
            continue  # only host_name (0) is defined; others are skipped, as OpenSSL does
        if host is not None:
            raise ClientHelloError("two host names in server_name")
        if not name or not name.isascii() or b"\x00" in name:
            raise ClientHelloError("server_name is not an ASCII host name")
        host = name.decode("ascii")
    if host is None:
        raise ClientHelloError("server_name without a host name")
    return host


def _alpn(data: bytes) -> tuple[bytes, ...]:
    if len(data) < 2 or (data[0] << 8 | data[1]) != len(data) - 2 or len(data) == 2:
        raise ClientHelloError("malformed ALPN extension")
    pos, end = 2, len(data)
    out = []
    while pos < end:
        length = data[pos]
        if not length:
            raise ClientHelloError("empty ALPN protocol name")
        if pos + 1 + length > end:
            raise ClientHelloError(f"{_TRUNCATED} in ALPN")
        out.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return tuple(out)


def _supported_versions(data: bytes) -> tuple[int, ...]:
    if not data or data[0] != len(data) - 1:
        raise ClientHelloError("malformed supported_versions extension")
    return _u16s(data, 1, len(data) - 1, "supported_versions")


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello message body (after the 4-byte handshake header)."""
    end = len(body)
    if end < 35:
        raise ClientHelloError(f"{_TRUNCATED} before the session id")
    if body[34] > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    pos = 35 + body[34]
    if pos + 2 > end:
        raise ClientHelloError(f"{_TRUNCATED} before the cipher suites")
    length = body[pos] << 8 | body[pos + 1]
    pos += 2
    if pos + length > end:
        raise ClientHelloError(f"{_TRUNCATED} in the cipher suites")
    ciphers = _u16s(body, pos, length, "cipher suites")
    pos += length
    if pos >= end or not body[pos]:
        raise ClientHelloError(f"no compression methods ({_TRUNCATED})")
    pos += 1 + body[pos]
    if pos > end:
        raise ClientHelloError(f"{_TRUNCATED} in the compression methods")
    extensions: list[int] = []
    found: dict[int, bytes] = {}  # the bodies of the extensions read below
    if pos < end:
        if pos + 2 > end:
            raise ClientHelloError(f"{_TRUNCATED} in the extensions")
        length = body[pos] << 8 | body[pos + 1]
        pos += 2
        if pos + length != end:
            if pos + length > end:
                raise ClientHelloError(f"{_TRUNCATED} in the extensions")
            raise ClientHelloError("trailing bytes after the extensions")
        while pos < end:
            if pos + 4 > end:
                raise ClientHelloError(f"{_TRUNCATED} in the extensions")
            kind = body[pos] << 8 | body[pos + 1]
            length = body[pos + 2] << 8 | body[pos + 3]
            pos += 4
            if pos + length > end:
                raise ClientHelloError(f"{_TRUNCATED} in extension 0x{kind:04x}")
            extensions.append(kind)
            if kind in _READ:
                found[kind] = body[pos : pos + length]
            pos += length
        if len(set(extensions)) != len(extensions):
            twice = next(e for e in extensions if extensions.count(e) > 1)
            raise ClientHelloError(f"extension 0x{twice:04x} appears twice")
    get = found.get
    sni, alpn = get(EXT_SERVER_NAME), get(EXT_ALPN)
    signatures, groups = get(EXT_SIGNATURE_ALGORITHMS), get(EXT_SUPPORTED_GROUPS)
    versions = get(EXT_SUPPORTED_VERSIONS)
    return ClientHello(
        body[0] << 8 | body[1],
        ciphers,
        tuple(extensions),
        None if sni is None else _server_name(sni),
        () if alpn is None else _alpn(alpn),
        () if signatures is None else _u16_vector(signatures, "signature_algorithms"),
        () if groups is None else _u16_vector(groups, "supported_groups"),
        () if versions is None else _supported_versions(versions),
        end + 4,
    )


_READ = frozenset(
    {
        EXT_SERVER_NAME,
        EXT_ALPN,
        EXT_SIGNATURE_ALGORITHMS,
        EXT_SUPPORTED_GROUPS,
        EXT_SUPPORTED_VERSIONS,
    }
)
