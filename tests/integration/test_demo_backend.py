"""The demo backend over a real socket: PROXY v2 header, keep-alive requests, HEAD, errors."""

from __future__ import annotations

import asyncio

import pytest

from tunnel.cli.demo_backend import handle_client
from tunnel.wire import proxy_protocol as pp

pytestmark = pytest.mark.timeout(30)

HEADER = pp.encode_v2(
    ("192.0.2.7", 40000),
    ("192.0.2.1", 443),
    tlvs=[(pp.PP2_TYPE_ALPN, b"http/1.1"), (pp.PP2_TYPE_AUTHORITY, b"demo.test")],
)


async def talk(data: bytes, *, bytewise: bool = False) -> bytes:
    server = await asyncio.start_server(handle_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
    return answer


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def test_keep_alive_requests_fed_bytewise() -> None:
    requests = b"GET / HTTP/1.1\r\nHost: d\r\n\r\n" * 2
    answer = asyncio.run(talk(HEADER + requests + b"GET / HTTP/1.0\r\n\r\n", bytewise=True))
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    *_, last = answer.split(b"HTTP/1.1 200 OK\r\n")
    _, headers, page = split(b"HTTP/1.1 200 OK\r\n" + last)
    assert headers["Connection"] == "close" and int(headers["Content-Length"]) == len(page)
    assert b"192.0.2.7" in page and b"demo.test" in page and b"http/1.1" in page
    assert b"request # on this connection  3" in page


def test_head_carries_the_get_content_length() -> None:
    get = split(asyncio.run(talk(HEADER + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")))
    head = split(asyncio.run(talk(HEADER + b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")))
    assert head[0] == get[0] == "HTTP/1.1 200 OK"
    assert head[2] == b""  # no body after a HEAD answer
    # The page shows the request line, so the GET of this very request is one byte longer.
    same_page = get[2].replace(b"GET / HTTP/1.1", b"HEAD / HTTP/1.1")
    assert head[1]["Content-Length"] == str(len(same_page))


def test_bad_request_is_answered_and_closed() -> None:
    answer = asyncio.run(talk(HEADER + b"GET /\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in answer


def test_no_header_no_answer() -> None:
    assert asyncio.run(talk(b"")) == b""
