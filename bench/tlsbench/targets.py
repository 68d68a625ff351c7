"""The TLS terminators under test: how to configure and start each one.

Every target gets the same certificate, TLS 1.2+1.3, and the same worker count
(where the terminator has such a knob), listens on a free loopback port and
forwards plain TCP to the backend.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backend import nginx_user_line, stream_module_line
from .certs import CertFiles
from .procs import fd_budget

REPO_ROOT = Path(__file__).resolve().parents[2]
# Same TLS 1.3 suites, in the same server-preferred order, for every target (Tunnel's
# default order; left alone, OpenSSL-based peers follow the client and pick AES-256).
CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


@dataclass(frozen=True)
class Setup:
    """Everything a config writer needs for one instance."""

    workdir: Path
    port: int
    backend_port: int
    cert: CertFiles
    workers: int


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] | None = None


def _ticket_key_line(workdir: Path) -> str:
    """``ticket_key_file = ...`` when TUNNEL_BENCH_TICKET_KEYS=1, else nothing.

    Off by default: the default bench config stays Tunnel's default (tickets encrypted by
    OpenSSL's own per-context keys). On, it measures the shared-key callback that a fleet
    with ``ticket_key_file`` runs at every handshake and resumption.
    """
    if os.environ.get("TUNNEL_BENCH_TICKET_KEYS") != "1":
        return ""
    path = workdir / "tickets.key"
    path.write_bytes(os.urandom(80))
    path.chmod(0o600)
    return f"ticket_key_file = {path}\n"


def tunnel_launch(s: Setup) -> Launch:
    conf = s.workdir / "tunnel.ini"
    conf.write_text(
        "[tunnel]\n"
        f"workers = {s.workers}\n"
        # Warning by default: the peers run without a log line per connection. With
        # TUNNEL_BENCH_LOG_LEVEL=info, what the default configuration's lines cost.
        f"log_level = {os.environ.get('TUNNEL_BENCH_LOG_LEVEL', 'warning')}\n"
        "allow_root = yes\n"
        "max_connections = 20000\n"
        "[bench]\n"
        f"accept = 127.0.0.1:{s.port}\n"
        f"cert = {s.cert.combined}\n"
        f"connect = 127.0.0.1:{s.backend_port}\n"
        f"ciphersuites = {CIPHERSUITES}\n" + _ticket_key_line(s.workdir)
    )
    return _tunnel_command("run", conf)


def _tunnel_command(command: str, conf: Path) -> Launch:
    """``tunnel COMMAND -c CONF``, from the Tunnel the benchmark measures."""
    # TUNNEL_BENCH_SRC=DIR runs the Tunnel found in DIR (e.g. a worktree's src/) instead of
    # the installed `tunnel` script, so a change can be measured before it is installed.
    override = os.environ.get("TUNNEL_BENCH_SRC")
    exe = None if override else shutil.which("tunnel")
    if exe:
        return Launch([exe, command, "-c", str(conf)])
    env = dict(os.environ)
    src = str(Path(override).resolve()) if override else str(REPO_ROOT / "src")
    env["PYTHONPATH"] = (
        src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    )
    return Launch([sys.executable, "-m", "tunnel", command, "-c", str(conf)], env)


def tunnel_data_plane(workdir: Path) -> str:
    """The data plane ``tunnel check`` names for the instance configured in ``workdir``
    (``compiled``, or ``python`` and why): a worktree whose extension was not built would
    otherwise be measured on the Python plane without a word."""
    launch = _tunnel_command("check", workdir / "tunnel.ini")
    out = subprocess.run(
        launch.argv, env=launch.env, capture_output=True, text=True, timeout=60
    ).stdout
    found = re.search(r"data plane: (.+)", out)
    return found.group(1).strip() if found else "unknown (tunnel check did not say)"


def hitch_launch(s: Setup) -> Launch:
    conf = s.workdir / "hitch.conf"
    # hitch refuses to run its workers as root.
    drop = 'user = "nobody"\ngroup = "nogroup"\n' if os.geteuid() == 0 else ""
    conf.write_text(
        drop + f'frontend = "[127.0.0.1]:{s.port}"\n'
        f'backend = "[127.0.0.1]:{s.backend_port}"\n'
        f'pem-file = "{s.cert.combined}"\n'
        f"workers = {s.workers}\n"
        "tls-protos = TLSv1.2 TLSv1.3\n"
        f'ciphersuites = "{CIPHERSUITES}"\n'
        "prefer-server-ciphers = on\n"
        "daemon = off\n"
        "backlog = 4096\n"
        "log-level = 0\n"
        f'ocsp-dir = "{s.workdir}"\n'
    )
    return Launch(["hitch", "--config", str(conf)])


def haproxy_launch(s: Setup) -> Launch:
    conf = s.workdir / "haproxy.cfg"
    conf.write_text(
        "global\n"
        f"    nbthread {s.workers}\n"
        f"    maxconn {fd_budget() // 2}\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 600s\n"
        "    timeout server 600s\n"
        f"    maxconn {fd_budget() // 2}\n"
        "frontend fe\n"
        f"    bind 127.0.0.1:{s.port} ssl crt {s.cert.combined} ssl-min-ver TLSv1.2"
        f" ssl-max-ver TLSv1.3 ciphersuites {CIPHERSUITES}\n"  # server order is the default
        "    default_backend be\n"
        "backend be\n"
        f"    server s1 127.0.0.1:{s.backend_port}\n"
    )
    return Launch(["haproxy", "-db", "-f", str(conf)])


def nginx_launch(s: Setup) -> Launch:
    conf = s.workdir / "nginx.conf"
    conf.write_text(
        f"""
{stream_module_line()}
{nginx_user_line()}
worker_processes {s.workers};
daemon off;
pid {s.workdir}/nginx.pid;
error_log {s.workdir}/error.log warn;
events {{ worker_connections {fd_budget()}; }}
stream {{
    server {{
        listen 127.0.0.1:{s.port} ssl backlog=4096;
        ssl_certificate {s.cert.cert};
        ssl_certificate_key {s.cert.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_conf_command Ciphersuites {CIPHERSUITES};
        ssl_prefer_server_ciphers on;
        proxy_pass 127.0.0.1:{s.backend_port};
    }}
}}
"""
    )
    return Launch(["nginx", "-e", "stderr", "-p", str(s.workdir), "-c", str(conf)])


def stunnel_launch(s: Setup) -> Launch:
    # stunnel has no worker knob: it runs one thread per connection.
    conf = s.workdir / "stunnel.conf"
    conf.write_text(
        "foreground = yes\n"
        "pid =\n"
        "debug = crit\n"  # hitch and stunnel would log every client EOF
        "[bench]\n"
        f"accept = 127.0.0.1:{s.port}\n"
        f"connect = 127.0.0.1:{s.backend_port}\n"
        f"cert = {s.cert.combined}\n"
        "sslVersionMin = TLSv1.2\n"
        "sslVersionMax = TLSv1.3\n"
        f"ciphersuites = {CIPHERSUITES}\n"
        "options = CIPHER_SERVER_PREFERENCE\n"
    )
    return Launch(["stunnel", str(conf)])


@dataclass(frozen=True)
class Target:
    name: str
    launch: Callable[[Setup], Launch] | None  # None: "direct" (no terminator, plain HTTP)
    binary: str | None

    @property
    def is_tls(self) -> bool:
        return self.launch is not None


TARGETS: dict[str, Target] = {
    "direct": Target("direct", None, None),
    "tunnel": Target("tunnel", tunnel_launch, None),
    "hitch": Target("hitch", hitch_launch, "hitch"),
    "haproxy": Target("haproxy", haproxy_launch, "haproxy"),
    "nginx": Target("nginx", nginx_launch, "nginx"),
    "stunnel": Target("stunnel", stunnel_launch, "stunnel"),
}
PEERS = ("hitch", "haproxy", "nginx", "stunnel")
