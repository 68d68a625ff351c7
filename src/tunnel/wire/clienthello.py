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

from dataclasses import dataclass
from typing import Final

NEED_DATA: Final = None

RECORD_HEADER: Final = 5
HANDSHAKE_RECORD: Final = 22
CLIENT_HELLO: Final = 1
MAX_RECORD: Final = 16384 + 256  # the most a TLS 1.2 peer may put in a plaintext record
DEFAULT_LIMIT: Final = 16384  # a ClientHello with a post-quantum key share is ~1.8 KiB

EXT_SERVER_NAME: Final = 0x0000
EXT_SUPPORTED_GROUPS: Final = 0x000A
EXT_SIGNATURE_ALGORITHMS: Final = 0x000D
EXT_ALPN: Final = 0x0010
EXT_SUPPORTED_VERSIONS: Final = 0x002B


class ClientHelloError(ValueError):
    """The client's first bytes are not a well-formed TLS ClientHello within the limit."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello offers. Lists keep the client's order, GREASE values included."""

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

    __slots__ = ("_handshake", "_header", "_hello", "_need", "consumed", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.consumed = 0
        self._header = bytearray()  # a record header being received
        self._need = 0  # bytes of the current record's body still to come
        self._handshake = bytearray()  # handshake bytes so far (record bodies, joined)
        self._hello: ClientHello | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """Take the next bytes; the hello once complete, else :data:`NEED_DATA`."""
        if self._hello is not None:
            return self._hello
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


class _Cursor:
    """Reads big-endian fields from a byte string, refusing to read past its end."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def take(self, n: int, what: str) -> bytes:
        if self.end - self.pos < n:
            raise ClientHelloError(f"ClientHello truncated in {what}")
        start = self.pos
        self.pos += n
        return self.data[start : self.pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, length_bytes: int, what: str) -> bytes:
        return self.take(self.uint(length_bytes, what), what)

    def done(self) -> bool:
        return self.pos == self.end


def _u16_list(data: bytes, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    if len(data) % 2 or (not data and not allow_empty):
        raise ClientHelloError(f"bad {what} list length {len(data)}")
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


def _u16_vector(data: bytes, what: str) -> tuple[int, ...]:
    cur = _Cursor(data)
    body = cur.vector(2, what)
    if not cur.done():
        raise ClientHelloError(f"trailing bytes in {what}")
    return _u16_list(body, what)


def _server_name(data: bytes) -> str | None:
    cur = _Cursor(data)
    names = _Cursor(cur.vector(2, "server_name"))
    if not cur.done() or names.done():
        raise ClientHelloError("malformed server_name extension")
    host: str | None = None
    while not names.done():
        kind = names.uint(1, "server_name")
        name = names.vector(2, "server_name")
        if kind != 0:
            continue  # only host_name (0) is defined; others are skipped, as OpenSSL does
        if host is not None:
            raise ClientHelloError("two host names in server_name")
        if not name or not name.isascii() or b"\x00" in name:
            raise ClientHelloError("server_name is not an ASCII host name")
        host = name.decode("ascii")
    return host


def _alpn(data: bytes) -> tuple[bytes, ...]:
    cur = _Cursor(data)
    protocols = _Cursor(cur.vector(2, "ALPN"))
    if not cur.done() or protocols.done():
        raise ClientHelloError("malformed ALPN extension")
    out = []
    while not protocols.done():
        name = protocols.vector(1, "ALPN")
        if not name:
            raise ClientHelloError("empty ALPN protocol name")
        out.append(name)
    return tuple(out)


def _supported_versions(data: bytes) -> tuple[int, ...]:
    cur = _Cursor(data)
    body = cur.vector(1, "supported_versions")
    if not cur.done():
        raise ClientHelloError("trailing bytes in supported_versions")
    return _u16_list(body, "supported_versions")


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello message body (after the 4-byte handshake header)."""
    cur = _Cursor(body)
    legacy_version = cur.uint(2, "version")
    cur.take(32, "random")
    if len(cur.vector(1, "session id")) > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    ciphers = _u16_list(cur.vector(2, "cipher suites"), "cipher suites")
    if not cur.vector(1, "compression methods"):
        raise ClientHelloError("no compression methods")
    fields: dict[str, object] = {}
    extensions: list[int] = []
    if not cur.done():
        exts = _Cursor(cur.vector(2, "extensions"))
        if not cur.done():
            raise ClientHelloError("trailing bytes after the extensions")
        seen: set[int] = set()
        while not exts.done():
            kind = exts.uint(2, "extensions")
            data = exts.vector(2, "extensions")
            if kind in seen:
                raise ClientHelloError(f"extension 0x{kind:04x} appears twice")
            seen.add(kind)
            extensions.append(kind)
            _read_extension(kind, data, fields)
    return ClientHello(
        legacy_version,
        ciphers,
        tuple(extensions),
        length=len(body) + 4,
        **fields,  # type: ignore[arg-type]
    )


def _read_extension(kind: int, data: bytes, fields: dict[str, object]) -> None:
    if kind == EXT_SERVER_NAME:
        if data:  # a server's empty echo; in a ClientHello it carries a list
            fields["server_name"] = _server_name(data)
        else:
            raise ClientHelloError("empty server_name extension")
    elif kind == EXT_ALPN:
        fields["alpn"] = _alpn(data)
    elif kind == EXT_SIGNATURE_ALGORITHMS:
        fields["signature_algorithms"] = _u16_vector(data, "signature_algorithms")
    elif kind == EXT_SUPPORTED_GROUPS:
        fields["groups"] = _u16_vector(data, "supported_groups")
    elif kind == EXT_SUPPORTED_VERSIONS:
        fields["supported_versions"] = _supported_versions(data)
