"""``tunnel status``: the summary of a running Tunnel, and its errors."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest

from .conftest import (
    Backend,
    Certs,
    Launcher,
    free_port,
    start_run,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

REQUEST = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
BODY = b"hello from the backend\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


def fetch_page(port: int, certs: Certs, version: ssl.TLSVersion) -> bytes:
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    ctx.minimum_version = ctx.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(REQUEST)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def not_tls(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while sock.recv(4096):
            pass


def test_status_summarises_the_traffic(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    admin = free_port()
    running = start_run(
        tunnel, tmp_path, certs, hello_backend, workers="2", admin=f"127.0.0.1:{admin}"
    )
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert fetch_page(running.port, certs, version) == RESPONSE
    not_tls(running.port)
    # start_run's readiness probe (connect, close) was one more connection that failed
    # its handshake: 4 accepted, 2 failed.
    expected = [
        f"Tunnel at 127.0.0.1:{admin}: ready",
        "  workers: 2 configured, 2 reporting; 0 restarts",
        "  active connections: 0",
        "  handshake failures in the last minute: 2",
        f"  bytes: in {2 * len(REQUEST)} (from clients), out {2 * len(RESPONSE)} (to clients)",
        "  listener [web]: accepted 4, active 0; handshakes ok 2, failed 2; "
        f"bytes in {2 * len(REQUEST)}, out {2 * len(RESPONSE)}",
        "  backend [listener:web]: 1 of 1 address(es) up",
    ]
    results = []

    def settled() -> bool:
        # The workers report once a second: poll until the numbers have arrived.
        result = tunnel.run("status", "-c", str(running.config))
        results.append(result)
        return result.returncode == 0 and result.stdout.splitlines()[:7] == expected

    try:
        wait_for("tunnel status to show the traffic", settled, timeout=30)
    finally:
        print(results[-1].stdout if results else "", results[-1].stderr if results else "")
    lines = results[-1].stdout.splitlines()
    assert re.fullmatch(
        rf"  cert \[web\] {re.escape(str(certs.cert_pem))}: expires \d{{4}}-\d\d-\d\d "
        r"\(\d+ days\)",
        lines[7],
    )
    assert lines[8] == "  counters (total, then by label):"
    assert "    connections_accepted: 4" in lines[9:]
    assert results[-1].stderr == ""  # trustme certificates live for years: no warning
    by_address = tunnel.run("status", "--admin", f"127.0.0.1:{admin}")
    assert by_address.returncode == 0
    assert by_address.stdout.splitlines()[1:6] == expected[1:6]


def test_status_when_the_endpoint_is_down(tunnel: Launcher, tmp_path: Path, certs: Certs) -> None:
    admin = free_port()
    config = write_config(tmp_path / "t.ini", certs, free_port(), 9, admin=f"127.0.0.1:{admin}")
    result = tunnel.run("status", "-c", str(config))
    assert result.returncode == 1
    assert f"cannot read the admin endpoint at 127.0.0.1:{admin}" in result.stderr
    assert "is Tunnel running" in result.stderr
    assert result.stdout == ""


def test_status_when_admin_is_off(tunnel: Launcher, tmp_path: Path, certs: Certs) -> None:
    config = write_config(tmp_path / "t.ini", certs, free_port(), 9)
    result = tunnel.run("status", "-c", str(config))
    assert result.returncode == 1
    assert f"{config}: [tunnel] admin is off" in result.stderr
    assert "admin = 127.0.0.1:9090" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give -c FILE"),
        (["--admin", "nowhere"], "--admin: 'nowhere' is not an address"),
        (["--admin", "unix:/x"], "--admin needs HOST:PORT"),
    ],
)
def test_status_usage_errors(tunnel: Launcher, args: list[str], message: str) -> None:
    result = tunnel.run("status", *args)
    assert result.returncode == 2
    assert message in result.stderr
