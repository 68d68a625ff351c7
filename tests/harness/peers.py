"""Real PROXY protocol peers from Debian packages: nginx and HAProxy, run by PID.

Each helper writes a config into a test directory, starts the server in the foreground
as a child process on a port that :func:`harness.net.reserve_port` holds for it, waits
(bounded) until that port accepts, and stops it by PID when the ``with`` block ends.
Tests skip when the binary is not installed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .net import reserve_port
from .waits import wait_until

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)

needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


def _accepts(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _run(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_until(lambda: _accepts(port, proc, log), 15, 0.05, what=f"{argv[0]} listening")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def nginx_proxy_backend(directory: Path) -> Iterator[tuple[int, Path]]:
    """nginx with ``listen ... proxy_protocol``: answers and logs ``$proxy_protocol_addr``.

    Yields ``(port, access_log)``; the reply body is ``addr port`` of the PROXY header.
    """
    assert NGINX is not None
    port = reserve_port()
    access = directory / "nginx-access.log"
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {directory};
    proxy_temp_path {directory};
    fastcgi_temp_path {directory};
    uwsgi_temp_path {directory};
    scgi_temp_path {directory};
    log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr "$request"';
    access_log {access} pp;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{
            default_type text/plain;
            return 200 "$proxy_protocol_addr $proxy_protocol_port\\n";
        }}
    }}
}}
"""
    )
    argv = [NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "nginx.err")]
    with _run(argv, port, directory / "nginx.out"):
        yield port, access


@contextlib.contextmanager
def haproxy_proxy_backend(directory: Path, fields: str) -> Iterator[int]:
    """HAProxy with ``accept-proxy``: answers every HTTP request with ``fields``.

    ``fields`` is an HAProxy log-format string such as ``%[src] %[fc_pp_authority]``.
    """
    assert HAPROXY is not None
    port = reserve_port()
    conf = directory / "haproxy.cfg"
    conf.write_text(
        f"""global
    log stderr format raw local0 info
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    log-format "{fields}"
    http-request return status 200 content-type text/plain lf-string "{fields}\\n"
"""
    )
    with _run([HAPROXY, "-db", "-f", str(conf)], port, directory / "haproxy.out"):
        yield port


@contextlib.contextmanager
def haproxy_sender(
    directory: Path, targets: list[tuple[str, int]], version: str = "v2"
) -> Iterator[int]:
    """HAProxy in TCP mode in front of ``targets`` (round robin, no checks), sending
    ``send-proxy`` (v1) or ``send-proxy-v2`` to each."""
    assert HAPROXY is not None
    port = reserve_port()
    option = "send-proxy-v2" if version == "v2" else "send-proxy"
    servers = "\n".join(
        f"    server t{i} {host}:{p} {option}" for i, (host, p) in enumerate(targets)
    )
    conf = directory / "haproxy-front.cfg"
    conf.write_text(
        f"""defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
{servers}
"""
    )
    with _run([HAPROXY, "-db", "-f", str(conf)], port, directory / "haproxy-front.out"):
        yield port
