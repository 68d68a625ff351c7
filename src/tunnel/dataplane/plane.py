"""Which data plane serves a listener: the compiled one or the Python reference.

A listener is served by the compiled plane (:mod:`tunnel.dataplane.fastplane`) when the
extension is built and loads with the same OpenSSL as the ``ssl`` module, the
``TUNNEL_DATAPLANE`` environment variable asks for it, and the listener needs nothing the
compiled plane does not have yet (:func:`unsupported`); otherwise the Python plane serves
it. ``tunnel check`` and the worker's start-up log say which plane serves each listener
and why.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from functools import cache
from types import ModuleType

from tunnel.config import Address, BackendConfig, ListenerConfig

ENV = "TUNNEL_DATAPLANE"
COMPILED, PYTHON = "compiled", "python"
# Off by default until the compiled plane has what main gained since (pools' health and
# TTL changes seen at once, ...): TUNNEL_DATAPLANE=compiled.
DEFAULT = PYTHON


@cache
def load() -> tuple[ModuleType | None, str]:
    """The extension module, or None and why it is not used."""
    raw = os.environ.get(ENV, "").strip().lower()
    if (raw or DEFAULT) != COMPILED:
        return None, f"{ENV}={raw}" if raw else f"{ENV}=compiled not set"
    try:
        from tunnel.dataplane import _fastplane  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"the compiled data plane is not built ({exc})"
    module: ModuleType = _fastplane
    if module.openssl_version() != ssl.OPENSSL_VERSION_NUMBER:
        return None, "the compiled data plane was built against another OpenSSL than ssl's"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    try:
        module.ctx_pointer(probe)
    except (TypeError, RuntimeError) as exc:
        return None, f"ssl.SSLContext layout not as expected ({exc})"
    return module, ""


def backends_of(
    listener: ListenerConfig, backends: Mapping[str, BackendConfig]
) -> list[BackendConfig]:
    names = {route.target for route in listener.routes}
    if listener.backend is not None:
        names.add(listener.backend)
    used = [backends[name] for name in sorted(names) if name in backends]
    if listener.backend is None:
        used.append(BackendConfig(listener.name, listener.connect))
    return used


def unsupported(listener: ListenerConfig, backends: Mapping[str, BackendConfig]) -> str | None:
    """Why the compiled plane cannot serve ``listener`` yet (None: it can)."""
    if listener.acme:
        return "acme (TLS-ALPN-01 challenges are answered in the handshake)"
    used = backends_of(listener, backends)
    if any(backend.passthrough for backend in used):
        return "passthrough backends"
    return None


def choose(listener: ListenerConfig, backends: Mapping[str, BackendConfig]) -> tuple[str, str]:
    """``(plane, why)`` for one listener: ``compiled`` or ``python``, and the reason."""
    module, why = load()
    if module is None:
        return PYTHON, why
    missing = unsupported(listener, backends)
    if missing is not None:
        return PYTHON, f"needs {missing}"
    return COMPILED, ""


def numeric(addr: Address) -> bool:
    if addr.kind == "unix":
        return True
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in addr.host else socket.AF_INET, addr.host)
    except OSError:
        return False
    return True
