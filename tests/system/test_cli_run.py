"""``tunnel run`` reached by real clients; stopping, draining and worker restarts."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness.http import slow_handler, start_slow_transfer, tls_client

from .conftest import (
    Backend,
    Certs,
    Launcher,
    Running,
    port_accepts,
    read_request,
    start_run,
)

pytestmark = pytest.mark.timeout(90)

BackendFactory = Callable[[Callable[[socket.socket], None]], Backend]


def need(tool: str) -> str:
    """The path of a command-line tool, or skip the test."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture
def served(tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend) -> Running:
    """``tunnel run`` with two workers in front of the hello backend."""
    return start_run(tunnel, tmp_path, certs, hello_backend, workers="2")


def curl(running: Running, *extra: str) -> subprocess.CompletedProcess[str]:
    """GET / through Tunnel with curl, verifying against the test CA."""
    return subprocess.run(
        [
            need("curl"),
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--cacert",
            str(running.certs.ca_pem),
            *extra,
            f"https://localhost:{running.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("version", ["--tlsv1.2", "--tlsv1.3"])
def test_curl_through_tunnel(served: Running, version: str) -> None:
    maximum = "1.2" if version == "--tlsv1.2" else "1.3"
    result = curl(served, version, "--tls-max", maximum)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the backend\n"
    tls = "TLSv1.2" if maximum == "1.2" else "TLSv1.3"
    served.proc.wait_log(rf"INFO tunnel\.conn: conn peer=127\.0\.0\.1:\d+ listener=web .*tls={tls}")


@pytest.mark.parametrize(
    ("flag", "protocol", "cipher"),
    [
        ("-tls1_2", "TLSv1.2", r"ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)"),
        ("-tls1_3", "TLSv1.3", r"TLS_(AES_\d+_GCM_SHA\d+|CHACHA20_POLY1305_SHA256)"),
    ],
)
def test_openssl_s_client(served: Running, flag: str, protocol: str, cipher: str) -> None:
    result = subprocess.run(
        [
            need("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{served.port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(served.certs.ca_pem),
            "-verify_return_error",
            flag,
            "-brief",
            "-ign_eof",
        ],
        input="GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Protocol version: {protocol}" in output
    assert re.search(rf"Ciphersuite: {cipher}", output), output
    assert "Verification: OK" in output
    assert "hello from the backend" in output


def test_new_connections_refused_while_draining(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend_factory: BackendFactory
) -> None:
    running = start_run(tunnel, tmp_path, certs, backend_factory(slow_handler))
    sock, _ = start_slow_transfer(running)
    with sock:
        running.proc.signal(signal.SIGTERM)
        running.proc.wait_log(r"draining 1 connection")
        assert not port_accepts(running.port)


def test_second_sigterm_exits_at_once(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend_factory: BackendFactory
) -> None:
    hold = threading.Event()

    def stalling(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
        hold.wait(30)

    running = start_run(tunnel, tmp_path, certs, backend_factory(stalling), drain_timeout="60s")
    try:
        with tls_client(running) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            running.proc.signal(signal.SIGTERM)
            running.proc.wait_log(r"draining 1 connection")
            started = time.monotonic()
            running.proc.signal(signal.SIGTERM)
            assert running.proc.wait(10) == 0
            assert time.monotonic() - started < 5
    finally:
        hold.set()
