"""Ini text for Tunnel: the one config writer of the tests.

Listeners accept on port 0 unless a test says otherwise; the port Tunnel bound is read
from its log (:meth:`harness.tunnel.TunnelProcess.bound`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .certs import Certs


def render_config(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Ini text from ``{section: {key: value}}`` (lists become comma separated; a value of
    None leaves the key out)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            if value is None:
                continue
            if isinstance(value, list | tuple):
                value = ", ".join(str(v) for v in value)
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def process_settings(**tunnel: Any) -> dict[str, Any]:
    """``[tunnel]`` for tests: one worker, info logs, may run as root (CI does)."""
    settings: dict[str, Any] = {"workers": 1, "log_level": "info", **tunnel}
    if os.geteuid() == 0:
        settings.setdefault("allow_root", "yes")
    return settings


def accept_address(host: str = "127.0.0.1", port: int = 0) -> str:
    """An ``accept`` value (port 0: the kernel chooses, Tunnel logs which)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_config(
    path: Path, certs: Certs, accept_port: int, backend_port: int, **tunnel: str
) -> Path:
    """A one-listener (``[web]``) configuration file; ``tunnel`` items go into ``[tunnel]``.

    ``accept_port`` 0 lets Tunnel choose (see :func:`harness.tunnel.start_run`).
    """
    sections = {
        "tunnel": process_settings(**({"drain_timeout": "20s"} | tunnel)),
        "web": {
            "accept": accept_address(port=accept_port),
            "cert": certs.cert_pem,
            "key": certs.key_pem,
            "connect": f"127.0.0.1:{backend_port}",
            "handshake_timeout": "5s",
        },
    }
    path.write_text(render_config(sections))
    return path


def pin_port(path: Path, port: int) -> None:
    """Rewrite ``accept = 127.0.0.1:0`` in the config file at ``path`` with the ``port``
    Tunnel bound, so that a test which edits and reloads the file names the address that
    is actually served (a reload keeps the sockets either way)."""
    text = path.read_text()
    path.write_text(text.replace(f"accept = {accept_address()}", f"accept = 127.0.0.1:{port}"))
