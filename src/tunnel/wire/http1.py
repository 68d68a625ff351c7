"""The small part of HTTP/1.1 that Tunnel's own servers speak: requests in, responses out.

Used by the admin endpoint (:mod:`tunnel.observe.admin`) and the demo backend
(:mod:`tunnel.cli.demo`); the relay never parses HTTP. Pure: no I/O.

Theory of operation
-------------------
:class:`RequestParser` is fed whatever bytes arrive, split in any way, and hands out
complete :class:`Request` objects with :meth:`RequestParser.next_request`. Its buffer is
capped: a request head longer than ``max_head`` bytes fails with 431 as soon as the bytes
show it, a body longer than ``max_body`` with 413 as soon as its ``Content-Length`` is
read, so a peer cannot make it hold more than one request's worth (plus the last read).
Bodies come only with ``Content-Length``; ``Transfer-Encoding`` is refused with 411.
Any malformed input raises :class:`HTTPError` carrying the status to answer with.

:func:`response` builds an answer; reason phrases come from :class:`http.HTTPStatus`. An
answer to ``HEAD`` carries the ``Content-Length`` the ``GET`` body would have, and no body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Final

MAX_HEAD: Final = 16 * 1024
MAX_BODY: Final = 1 << 20
VERSIONS: Final = ("HTTP/1.0", "HTTP/1.1")

# The blank line that ends a head: CRLF CRLF, or bare LFs (RFC 9112 section 2.2 lets a
# recipient accept LF alone, and `printf ... | nc` users send it).
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION: Final = re.compile(r"HTTP/[0-9]\.[0-9]")


class HTTPError(ValueError):
    """The request cannot be served; :attr:`status` is what to answer."""

    def __init__(self, status: HTTPStatus, detail: str = "") -> None:
        super().__init__(f"{status.value} {status.phrase}" + (f": {detail}" if detail else ""))
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request: header names are lower case; repeated headers are joined by ', '."""

    method: str
    target: str
    version: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer (HTTP/1.0 and 1.1 rules)."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def parse_head(head: bytes) -> Request:
    """Parse a request line and its header lines (the bytes before the blank line)."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
    try:
        text = [line.decode("ascii") for line in lines]
    except UnicodeDecodeError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "bytes outside ASCII in the head") from None
    parts = text[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    if version not in VERSIONS:
        raise HTTPError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    headers: dict[str, str] = {}
    for line in text[1:]:
        name, sep, value = line.partition(":")
        # No space before the colon and no folded lines: both are smuggling vectors.
        if not sep or not _TOKEN.fullmatch(name):
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"malformed header line {line[:40]!r}")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(method, target, version, headers)


def body_length(request: Request, max_body: int = MAX_BODY) -> int:
    """The body size the head announces; HTTPError when it is unusable or too large."""
    if "transfer-encoding" in request.headers:
        raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
    values = {v.strip() for v in request.headers.get("content-length", "0").split(",")}
    if len(values) != 1 or not (text := values.pop()).isdigit() or not text.isascii():
        raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    length = int(text)
    if length > max_body:
        raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the limit is {max_body} bytes")
    return length


class RequestParser:
    """Incremental request parser with a capped buffer (see the module docstring).

    Call :meth:`feed` with each read, then :meth:`next_request` until it returns None;
    at end of input, :meth:`finish` says whether a request was cut off.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self._buf = bytearray()
        self._head: Request | None = None  # parsed, waiting for its body
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes held: the part of a request (or of pipelined ones) not yet handed out."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Take bytes from the peer; HTTPError (431) once a head is longer than allowed."""
        self._buf += data
        if self._head is None:
            self._find_head_end()

    def next_request(self) -> Request | None:
        """The next complete request, or None until more bytes arrive; HTTPError if bad."""
        if self._head is None:
            # RFC 9112 section 2.2: ignore empty lines before a request line (some
            # clients send a CRLF after a body).
            while self._buf.startswith((b"\n", b"\r\n")):
                del self._buf[: 1 if self._buf[0] == ord("\n") else 2]
            end = self._find_head_end()
            if end is None:
                return None
            head_end, body_start = end
            head = parse_head(bytes(self._buf[:head_end]))
            self._need = body_length(head, self.max_body)
            self._head = head
            del self._buf[:body_start]
        if len(self._buf) < self._need:
            return None
        request = replace(self._head, body=bytes(self._buf[: self._need]))
        del self._buf[: self._need]
        self._head, self._need = None, 0
        return request

    def finish(self) -> None:
        """The peer sent EOF: HTTPError (400) if it cut a request off, else nothing."""
        if self._head is not None or self._buf.strip():
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the request ended early")

    def _find_head_end(self) -> tuple[int, int] | None:
        # Search only where a head may end, so a peer that never sends the blank line
        # fails as soon as it has sent more than max_head bytes, whatever the read sizes.
        limit = self.max_head + 4
        match = _HEAD_END.search(self._buf, 0, limit)
        if match is not None:
            return match.start(), match.end()
        if len(self._buf) >= limit:
            raise HTTPError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        return None


def response(
    status: HTTPStatus | int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    method: str = "GET",
    keep_alive: bool = False,
    version: str = "HTTP/1.1",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An HTTP response; for ``method == "HEAD"`` the head alone, with the body's length."""
    status = HTTPStatus(status)
    lines = [
        f"{version} {status.value} {status.phrase}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + body


def error_response(error: HTTPError, *, version: str = "HTTP/1.1") -> bytes:
    """The answer to a request that failed to parse (and the connection closes after it)."""
    text = f"{error.status.value} {error.status.phrase}\n".encode()
    return response(error.status, text, version=version)
