"""Reload (SIGHUP, ``tunnel reload``, ``watch = yes``) without dropping a connection."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness.http import (
    fetch,
    read_all,
    slow_body,
    slow_handler,
    start_slow_transfer,
)
from harness.process import generation_line

from .conftest import (
    Backend,
    Certs,
    Launcher,
    Running,
    port_accepts,
    reserve_port,
    start_run,
    wait_for,
    write_certs,
)

pytestmark = pytest.mark.timeout(120)

BackendFactory = Callable[[Callable[[socket.socket], None]], Backend]


def test_reload_serves_new_certificate_and_keeps_old_connection(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend_factory: BackendFactory
) -> None:
    running = start_run(tunnel, tmp_path, certs, backend_factory(slow_handler))
    before, _ = fetch_any(running)
    sock, first = start_slow_transfer(running)
    with sock:
        write_certs(certs.ca, certs.cert_pem.parent)  # a new leaf at the same paths
        running.proc.signal(signal.SIGHUP)
        running.proc.wait_log(generation_line(2))
        # The old generation may accept for a moment until it is told to drain.
        deadline = time.monotonic() + 10
        after, _ = fetch_any(running)
        while after == before and time.monotonic() < deadline:
            after, _ = fetch_any(running)
        assert after != before
        data = read_all(sock, first)
    assert data.partition(b"\r\n\r\n")[2] == slow_body()


def fetch_any(running: Running) -> tuple[bytes, bytes]:
    """Like fetch, but tolerating any response (the slow backend answers slowly)."""
    ctx = ssl.create_default_context(cafile=str(running.certs.ca_pem))
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return sock.getpeercert(binary_form=True) or b"", b""


def test_bad_reload_keeps_serving(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    running = start_run(tunnel, tmp_path, certs, hello_backend)
    workers = running.proc.worker_pids()
    good = running.config.read_text()
    running.config.write_text(good.replace("handshake_timeout", "handshake_timout"))
    running.proc.signal(signal.SIGHUP)
    line = running.proc.wait_log(r"reload failed: (.*)").group(1)
    assert "tunnel.ini: [web] handshake_timout: unknown key" in line
    assert "did you mean 'handshake_timeout'" in line
    running.proc.wait_log(r"still serving the previous configuration")
    assert fetch(running.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
    assert running.proc.worker_pids() == workers

    # A certificate that does not match its key: same, named by section and key.
    running.config.write_text(good)
    other = write_certs(certs.ca, tmp_path / "other")
    certs.key_pem.write_bytes(other.key_pem.read_bytes())
    offset = len(running.proc.stderr())
    running.proc.signal(signal.SIGHUP)
    line = running.proc.wait_log(r"reload failed: (.*)", start=offset).group(1)
    assert "[web] cert" in line or "[web] key" in line
    assert fetch(running.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
    assert running.proc.worker_pids() == workers


def test_reload_adds_and_removes_listeners(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    running = start_run(tunnel, tmp_path, certs, hello_backend)
    good = running.config.read_text()
    added = (
        good
        + "\n[more]\n"
        + "\n".join(
            [
                "accept = 127.0.0.1:0",  # [web] now names the port it was given
                f"cert = {certs.cert_pem}",
                f"key = {certs.key_pem}",
                f"connect = 127.0.0.1:{hello_backend.port}",
            ]
        )
    )
    running.config.write_text(added)
    running.proc.signal(signal.SIGHUP)
    running.proc.wait_log(generation_line(2))
    extra = running.proc.bound_port("more")
    assert fetch(extra, certs.ca_pem)[1].endswith(b"hello from the backend\n")
    assert fetch(running.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")

    # Remove [web] (the original listener); its port stops accepting.
    running.config.write_text(
        added.replace("[web]", "[web-gone]").replace(
            f"accept = 127.0.0.1:{running.port}", f"accept = 127.0.0.1:{reserve_port()}"
        )
    )
    running.proc.signal(signal.SIGHUP)
    running.proc.wait_log(generation_line(3))
    wait_for("the removed port to refuse", lambda: not port_accepts(running.port))
    assert fetch(extra, certs.ca_pem)[1].endswith(b"hello from the backend\n")


def test_reload_command(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    pid_file = tmp_path / "tunnel.pid"
    running = start_run(tunnel, tmp_path, certs, hello_backend, pid_file=str(pid_file))
    wait_for("the pid file", lambda: pid_file.exists())
    assert pid_file.read_text() == f"{running.proc.pid}\n"
    result = tunnel.run("reload", "-c", str(running.config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Reloaded pid {running.proc.pid}: generation 2 serving\n"
    running.proc.wait_log(generation_line(2))

    # A broken file is reported here, and the running Tunnel is not signalled.
    good = running.config.read_text()
    running.config.write_text(good.replace("connect =", "conect ="))
    result = tunnel.run("reload", "-c", str(running.config))
    assert result.returncode == 2
    assert "[web] conect: unknown key" in result.stderr
    assert (
        "reload: reading"
        not in running.proc.stderr().split(generation_line(2).replace("\\", ""))[-1]
    )

    result = tunnel.run("reload", "--pid", str(running.proc.pid))
    assert result.returncode == 0, result.stderr  # without -c it cannot wait for the outcome
    assert "give -c FILE to wait for it" in result.stdout
    running.proc.wait_log(r"reload failed: .*conect")
    running.config.write_text(good)
    running.proc.stop()
    assert not pid_file.exists()
