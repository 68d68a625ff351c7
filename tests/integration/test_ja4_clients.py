"""JA4 of real clients' first flights, against a second implementation (``ja4plus``).

Each client (curl, openssl s_client, Python's ssl module) connects to a loopback socket
that reads its first flight and closes; Tunnel's reader and JA4 and ja4plus then read the
same bytes. ja4plus is used only here.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable

import pytest

from tunnel.wire.clienthello import ClientHelloReader
from tunnel.wire.ja4 import ja4

ja4plus = pytest.importorskip("ja4plus")
from ja4plus.utils.tls_utils import parse_tls_handshake  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def capture(start_client: Callable[[int], subprocess.Popen[bytes] | None]) -> bytes:
    """The first flight a client sends to a loopback port (the connection is then closed)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        proc = start_client(server.getsockname()[1])
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                reader = ClientHelloReader()
                data = b""
                while reader.feed(chunk := conn.recv(65536)) is None:
                    assert chunk, "client closed before its ClientHello was complete"
                    data += chunk
                return data + chunk
        finally:
            if proc is not None:
                proc.kill()
                proc.wait(timeout=5)


def _curl(*args: str) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["curl", "-s", "-k", "--max-time", "5", *args, f"https://localhost:{port}/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    return start


def _s_client(*args: str) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    return start


def _python(server_name: str | None, alpn: list[str], tls12: bool = False) -> Callable[[int], None]:
    def start(port: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        sock = socket.create_connection(("127.0.0.1", port))
        outgoing = ssl.MemoryBIO()
        obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
        _open.append(sock)  # closed after the capture

    return start


_open: list[socket.socket] = []

CLIENTS = {
    "curl": _curl(),
    "curl-http1.1": _curl("--http1.1"),
    "curl-tlsv1.2-max": _curl("--tls-max", "1.2"),
    "s_client": _s_client("-servername", "example.com"),
    "s_client-alpn-noservername": _s_client("-noservername", "-alpn", "http/1.1,h2"),
    "s_client-tls1_2": _s_client("-tls1_2", "-servername", "a.example"),
    "s_client-groups": _s_client("-groups", "P-521:X448", "-servername", "x.example"),
    "python": _python("example.com", ["h2", "http/1.1"]),
    "python-no-sni": _python(None, []),
    "python-tls12": _python("example.org", ["http/1.1"], tls12=True),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_ja4_matches_ja4plus(client: str) -> None:
    if client.startswith("curl") and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    try:
        flight = capture(CLIENTS[client])
    finally:
        while _open:
            _open.pop().close()
    hello = ClientHelloReader().feed(flight)
    assert hello is not None
    reference = ja4plus.generate_ja4(parse_tls_handshake(flight))
    assert reference is not None
    ours = ja4(hello)
    print(f"{client}: {ours}")
    assert ours == reference
    # Consistency with what the client was told to offer.
    if "no-sni" in client or "noservername" in client:
        assert ours[3] == "i" and hello.server_name is None
    else:
        assert ours[3] == "d" and hello.server_name
