"""The admin endpoint's HTTP over a real socket: HEAD, errors, caps, clients that go away."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from tunnel.config import Address
from tunnel.observe.admin import MAX_REQUEST, AdminServer, Response

pytestmark = pytest.mark.timeout(30)

BODY = b"tunnel_up 1\n" * 100


def handler(path: str) -> Response:
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", BODY
    return 404, "text/plain", b"not found\n"


@pytest.fixture
def admin() -> Iterator[int]:
    """An AdminServer on a loopback port, driven by a select loop in a thread."""
    server = AdminServer(Address("tcp", host="127.0.0.1", port=0), handler)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            readable, writable, _ = select.select(server.readers(), server.writers(), [], 0.05)
            for sock in readable:
                server.readable(sock)
            for sock in writable:
                server.writable(sock)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def test_get_and_head(admin: int) -> None:
    status, headers, body = split(exchange(admin, b"GET /metrics?x HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert (status, body) == ("HTTP/1.0 200 OK", BODY)
    assert headers["Connection"] == "close"
    head = split(exchange(admin, b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert head == ("HTTP/1.0 200 OK", headers, b"")  # the GET's Content-Length, no body
    assert headers["Content-Length"] == str(len(BODY))


def test_errors_carry_their_reason_phrase(admin: int) -> None:
    assert exchange(admin, b"GET /nope HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404 Not Found")
    refused = split(exchange(admin, b"POST /metrics HTTP/1.0\r\n\r\n"))
    assert refused[0] == "HTTP/1.0 405 Method Not Allowed"
    assert refused[1]["Allow"] == "GET, HEAD"
    assert exchange(admin, b"nonsense\r\n\r\n").startswith(b"HTTP/1.0 400 Bad Request")
    assert exchange(admin, b"GET /metr").startswith(b"HTTP/1.0 400 Bad Request")  # cut off
    big = b"GET /metrics HTTP/1.0\r\nX: " + b"a" * MAX_REQUEST
    assert exchange(admin, big).startswith(b"HTTP/1.0 431 Request Header Fields Too Large")


def test_bare_lf_request_and_silent_client(admin: int) -> None:
    assert exchange(admin, b"GET /metrics HTTP/1.0\n\n").endswith(BODY)
    assert exchange(admin, b"") == b""  # closed without a word: closed in turn, no answer
    assert exchange(admin, b"GET /metrics HTTP/1.0\r\n\r\n").endswith(BODY)  # still serving
