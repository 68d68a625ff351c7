"""The one log line that describes a connection when it ends."""

from __future__ import annotations

import ssl
from typing import Any


def client_cn(sslobj: ssl.SSLObject) -> str | None:
    """The verified client certificate's subject CN, if there is one."""
    try:
        cert = sslobj.getpeercert()
    except ValueError:  # handshake not done
        return None
    subject: Any = (cert or {}).get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def tcp_addr(addr: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a TCP socket address; None for anything else."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return None


def peer_text(addr: Any) -> str:
    """A socket address as the log shows it: ``1.2.3.4:5``, ``[::1]:5`` or ``-``."""
    peer = tcp_addr(addr)
    if peer is None:
        return "-"
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def tls_fields(sslobj: ssl.SSLObject, handshaken: bool) -> dict[str, str | int | float]:
    """SNI, ALPN, TLS version, cipher and resumption of a connection.

    Version and cipher are shown together or not at all: OpenSSL knows the cipher of a
    handshake that failed after the ServerHello, but no version until one completes.
    """
    cipher = sslobj.cipher() if handshaken else None
    version = sslobj.version() if handshaken else None
    both = cipher is not None and version is not None
    return {
        "sni": getattr(sslobj, "sni", None) or "-",
        "alpn": sslobj.selected_alpn_protocol() or "-",
        "tls": version if both and version else "-",
        "cipher": cipher[0] if both and cipher else "-",
        "resumed": "yes" if sslobj.session_reused else "no",
    }


def format_summary(fields: dict[str, str | int | float]) -> str:
    """The text form of a connection summary: ``conn peer=... reason="..."``."""
    parts = ["conn"]
    for key, value in fields.items():
        if key == "duration":
            parts.append(f"duration={value:.3f}s")
        elif key == "reason":
            parts.append(f'reason="{value}"')
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
