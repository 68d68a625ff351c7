"""wire/http1.py: the request parser fed byte by byte, its caps, and the responses."""

from __future__ import annotations

import itertools
from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.wire.http1 import (
    HTTPError,
    Request,
    RequestParser,
    error_response,
    parse_head,
    response,
)

GET = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"


def feed_bytewise(parser: RequestParser, data: bytes) -> list[Request]:
    """Feed one byte at a time, taking every request as soon as it is complete."""
    requests = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while (request := parser.next_request()) is not None:
            requests.append(request)
    return requests


def test_a_request_fed_byte_by_byte() -> None:
    parser = RequestParser()
    for i in range(len(GET) - 1):
        parser.feed(GET[i : i + 1])
        assert parser.next_request() is None
    parser.feed(GET[-1:])
    request = parser.next_request()
    assert request == Request(
        "GET", "/metrics?x=1", "HTTP/1.1", {"host": "a", "accept": "text/html"}, b""
    )
    assert request.path == "/metrics"
    assert parser.buffered == 0
    parser.finish()  # a clean end between requests


def test_pipelined_requests_with_bodies_in_any_split() -> None:
    data = POST + GET + POST
    whole = RequestParser()
    whole.feed(data)
    at_once = [whole.next_request(), whole.next_request(), whole.next_request()]
    assert whole.next_request() is None
    assert feed_bytewise(RequestParser(), data) == at_once
    assert [r.body for r in at_once if r] == [b"hello", b"", b"hello"]


def test_bare_lf_and_leading_empty_lines_are_accepted() -> None:
    [request] = feed_bytewise(RequestParser(), b"\r\n\nGET / HTTP/1.0\nHost: x\n\n")
    assert (request.method, request.version, request.headers) == ("GET", "HTTP/1.0", {"host": "x"})


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive(version: str, connection: str, keep: bool) -> None:
    headers = {"connection": connection} if connection else {}
    assert Request("GET", "/", version, headers).keep_alive() is keep


def test_repeated_headers_are_joined() -> None:
    request = parse_head(b"GET / HTTP/1.1\r\nAccept: a\r\naccept: b")
    assert request.headers == {"accept": "a, b"}


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET  / HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"G(T / HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/2.0\r\n\r\n", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET / HTTX/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /\xff HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", HTTPStatus.LENGTH_REQUIRED),
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    ],
)
def test_malformed_requests(data: bytes, status: HTTPStatus) -> None:
    with pytest.raises(HTTPError) as caught:
        feed_bytewise(RequestParser(max_body=10), data)
    assert caught.value.status == status


def test_same_content_length_twice_is_one() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
    request = parser.next_request()
    assert request is not None and request.body == b"ok"


def test_head_cap_holds_whatever_the_split() -> None:
    parser = RequestParser(max_head=64)
    endless = b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 1000
    with pytest.raises(HTTPError) as caught:
        for i in range(len(endless)):
            parser.feed(endless[i : i + 1])
            assert parser.next_request() is None
            assert parser.buffered <= 64 + 4  # never more than a head may be long
    assert caught.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_a_head_of_exactly_the_cap_passes() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 40
    parser = RequestParser(max_head=len(head))
    parser.feed(head + b"\r\n\r\n")
    assert parser.next_request() is not None


@pytest.mark.parametrize("cut", [b"GET / HT", b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel"])
def test_eof_inside_a_request(cut: bytes) -> None:
    parser = RequestParser()
    parser.feed(cut)
    assert parser.next_request() is None
    with pytest.raises(HTTPError) as caught:
        parser.finish()
    assert caught.value.status == HTTPStatus.BAD_REQUEST


def test_response_reason_phrases_and_headers() -> None:
    data = response(404, b"nope\n", headers=[("Server", "x")], version="HTTP/1.0")
    assert data == (
        b"HTTP/1.0 404 Not Found\r\nServer: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nnope\n"
    )
    assert response(503, keep_alive=True).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: keep-alive\r\n" in response(200, keep_alive=True)


def test_head_answer_carries_the_get_length_and_no_body() -> None:
    body = b"x" * 1234
    get = response(200, body, method="GET")
    head = response(200, body, method="HEAD")
    assert b"Content-Length: 1234\r\n" in head
    assert head.endswith(b"\r\n\r\n") and get == head + body


def test_error_response() -> None:
    error = HTTPError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    data = error_response(error)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert data.endswith(b"\r\n\r\n431 Request Header Fields Too Large\n")


def outcome(data: bytes, cuts: list[int]) -> tuple[str, object]:
    """Feed ``data`` cut at ``cuts``; every request, or the status of the first error."""
    parser = RequestParser(max_head=256, max_body=64)
    requests: list[Request] = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            parser.feed(data[start:end])
            while (request := parser.next_request()) is not None:
                requests.append(request)
            assert parser.buffered <= 256 + 4 + 64 + (end - start)
        parser.finish()
    except HTTPError as exc:
        return "error", exc.status
    return "ok", requests


_pieces = st.sampled_from(
    [GET, POST, b"\r\n", b"HEAD / HTTP/1.0\r\n\r\n", b"X: y\r\n", b"Content-Length: 3\r\n"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_pieces, st.binary(max_size=40)), max_size=8),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_any_split_gives_the_same_outcome(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    whole = outcome(data, [])
    assert outcome(data, cuts) == whole
    if whole[0] == "ok" and len(data) < 120:
        assert outcome(data, list(range(len(data)))) == whole  # byte by byte
