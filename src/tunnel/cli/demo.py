"""``tunnel demo``: a self-signed certificate, a tiny HTTP backend, one listener.

* :func:`ensure_demo_cert` makes the demo certificate once (see :mod:`tunnel.cli.gen_cert`).
* :mod:`tunnel.cli.demo_backend` is the backend: plain HTTP on a Unix socket, behind a
  PROXY v2 header, answering with a page that shows what Tunnel saw.
* :func:`demo_config` is the in-code configuration that joins the two, and
  :func:`cmd_demo` runs them until Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from tunnel.cli.common import UsageError, out
from tunnel.cli.demo_backend import start_backend
from tunnel.cli.gen_cert import default_cert_path, state_dir
from tunnel.config import Address, Config, ListenerConfig, TunnelSettings
from tunnel.errors import ConfigErrors, TunnelError
from tunnel.observe.log import setup_logging
from tunnel.process import supervisor
from tunnel.tls.secret_files import write_private_file
from tunnel.tls.selfsigned import make_self_signed

BACKEND_SOCKET = "demo-backend.sock"
DEMO_DRAIN_SECONDS = 3.0


# --------------------------------------------------------------------------- certificates


def ensure_demo_cert() -> tuple[Path, bool]:
    """Create the demo certificate if it does not exist; return its path and if it was made."""
    path = default_cert_path()
    if path.exists():
        return path, False
    try:
        write_private_file(path, make_self_signed())
    except FileExistsError:  # made by a concurrent demo meanwhile
        return path, False
    return path, True


# --------------------------------------------------------------------------- configuration


def demo_address(host: str, port: int) -> Address:
    """The demo's accept address; ValueError for a bad host or port."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c in host for c in "/ :"):
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    return Address("tcp", host=host, port=port)


def demo_config(accept: Address, cert: Path, backend_socket: Path) -> Config:
    """The in-code configuration of ``tunnel demo``: one worker, one listener."""
    listener = ListenerConfig(
        name="demo",
        accept=(accept,),
        cert=(str(cert),),
        key=None,
        connect=(Address("unix", path=str(backend_socket)),),
        proxy_protocol="v2",
    )
    settings = TunnelSettings(workers=1, drain_timeout=DEMO_DRAIN_SECONDS)
    return Config(path="<demo>", tunnel=settings, listeners=(listener,))


# --------------------------------------------------------------------------- the command


def cmd_demo(args: argparse.Namespace) -> int:
    """``tunnel demo``: self-signed certificate, built-in backend, one listener."""
    try:
        accept = demo_address(args.host, args.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    setup_logging(args.log_level, "stderr", "daemon")
    cert, made = ensure_demo_cert()
    out(f"{'Created' if made else 'Using'} the demo certificate {cert} (self-signed)")
    socket_path = state_dir() / BACKEND_SOCKET
    config = demo_config(accept, cert, socket_path)
    backend = start_backend(socket_path)
    try:
        runner = _prepare_demo(config, args.port)
        out(f"Demo backend (plain HTTP, pid {backend.pid}) listens on unix:{socket_path}")
        out(f"Tunnel terminates TLS on {accept}. Try it:")
        out(f"    curl -k https://localhost:{accept.port}/")
        out("Press Ctrl-C to stop.")
        return runner.run()
    finally:
        backend.stop()


def _prepare_demo(config: Config, port: int) -> supervisor.Supervisor:
    """Load the certificate and bind the port; a clash becomes a usage error."""
    runner = supervisor.Supervisor(config)
    try:
        runner.prepare()
    except ConfigErrors as exc:
        problems = "; ".join(e.message for e in exc.errors)
        raise UsageError(f"{problems} (choose another --port, e.g. --port {port + 1})") from None
    except OSError as exc:
        raise TunnelError(f"cannot start: {exc}") from exc
    return runner
