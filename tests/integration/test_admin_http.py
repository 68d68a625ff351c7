"""The admin endpoint's HTTP over a real socket (HEAD, errors, caps, clients that go away),
and ``tunnel status`` reading it: exit code 0 only when Tunnel is ready."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

import pytest

from tunnel.cli.main import main
from tunnel.config import Address
from tunnel.observe import metrics
from tunnel.observe.admin import MAX_REQUEST, AdminServer, Handler, Response

pytestmark = pytest.mark.timeout(30)

BODY = b"tunnel_up 1\n" * 100


def handler(path: str) -> Response:
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", BODY
    return 404, "text/plain", b"not found\n"


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[int]:
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


@pytest.fixture
def admin() -> Iterator[int]:
    with serving(handler) as port:
        yield port


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


@pytest.mark.parametrize(
    ("ready", "code", "first"), [(True, 0, "ready"), (False, 1, "not ready: draining")]
)
def test_status_exit_code_follows_readyz(
    ready: bool, code: int, first: str, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = metrics.SupervisorFacts(workers_configured=1, workers_reporting=1, worker_restarts=3)
    text = metrics.render(metrics.merge([]), facts)

    def tunnel_admin(path: str) -> Response:
        if path == "/readyz":
            return (
                (200, "text/plain", b"ready\n")
                if ready
                else (503, "text/plain", b"not ready: draining\n")
            )
        return 200, "text/plain; version=0.0.4", text

    with serving(tunnel_admin) as port:
        assert main(["status", "--admin", f"127.0.0.1:{port}"]) == code
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Tunnel at 127.0.0.1:{port}: {first}"
    assert "    worker_restarts: 3" in lines
