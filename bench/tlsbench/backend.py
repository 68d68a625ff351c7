"""The plain-HTTP nginx backend every terminator forwards to."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .procs import Managed, Registry, fd_budget, free_port, wait_for_port

SMALL_BODY = b"x" * 99 + b"\n"  # exactly 100 bytes
BIG_SIZE = 256 * 1024 * 1024


@dataclass
class Backend:
    managed: Managed
    port: int


def nginx_user_line() -> str:
    """Keep nginx workers as root when we are root: our temp dirs are mode 0700."""
    return "user root;" if os.geteuid() == 0 else ""


def stream_module_line() -> str:
    """``load_module`` for the dynamic stream module (Debian's libnginx-mod-stream), if any."""
    found = sorted(glob.glob("/usr/lib/nginx/modules/ngx_stream_module.so"))
    return f"load_module {found[0]};" if found else ""


def _write_docroot(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "small").write_bytes(SMALL_BODY)
    with (root / "big").open("wb") as big:
        big.truncate(BIG_SIZE)  # sparse: no disk I/O, served from the page cache


def _config(prefix: Path, port: int, workers: int) -> str:
    temp = prefix / "tmp"
    return f"""
{nginx_user_line()}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {fd_budget()}; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_header_timeout 600s;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {prefix}/www;
        location = /small {{ }}
        location = /big {{ }}
    }}
}}
"""


def start_backend(registry: Registry, prefix: Path, workers: int) -> Backend:
    """Start the backend nginx under ``prefix`` (a fresh temp dir) and wait until it serves."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    _write_docroot(prefix / "www")
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, port, workers))
    argv = ["nginx", "-e", "stderr", "-p", str(prefix), "-c", str(conf)]
    managed = registry.start("backend-nginx", argv, prefix / "stdout.log")
    wait_for_port(managed, port)
    return Backend(managed, port)
