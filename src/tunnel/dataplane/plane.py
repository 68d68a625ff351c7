"""Which data plane serves a listener: the compiled one or the Python reference.

A listener is served by the compiled plane (:mod:`tunnel.dataplane.fastplane`) when the
extension is built and loads with the same OpenSSL as the ``ssl`` module, nobody asked for
the Python plane (``TUNNEL_DATAPLANE=python``, or ``dataplane = python`` in ``[tunnel]``;
the environment variable wins), and the listener needs nothing the compiled plane does not
have yet (:func:`unsupported`); otherwise the Python plane serves it. ``tunnel check`` and
the start-up log say which plane serves each listener and why.
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
COMPILED, PYTHON, AUTO = "compiled", "python", "auto"
CHOICES = (AUTO, COMPILED, PYTHON)  # also the values of the ``dataplane`` key
# auto: the compiled plane wherever it was built (pip install builds it when a C compiler
# and OpenSSL's headers are there), the Python plane otherwise.
DEFAULT = AUTO


def wanted(setting: str = DEFAULT) -> tuple[str, str]:
    """``(choice, source)``: what was asked for, and where (the variable, or the key)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw:
        return raw, f"{ENV}={raw}"
    return setting, f"dataplane = {setting}"


def worth_a_warning(setting: str = DEFAULT) -> bool:
    """The Python plane serves although nobody chose it: the compiled plane was asked for
    by name and cannot be had, or ``TUNNEL_DATAPLANE`` has a value it does not know."""
    return wanted(setting)[0] not in (AUTO, PYTHON) and load(setting)[0] is None


@cache
def load(setting: str = DEFAULT) -> tuple[ModuleType | None, str]:
    """The extension module, or None and why it is not used."""
    choice, source = wanted(setting)
    if choice == PYTHON:
        return None, source
    if choice not in CHOICES:
        return None, f"{source} is not one of {', '.join(CHOICES)}"
    module, why = _import()
    if module is None and choice == COMPILED:
        return None, f"{source}, but {why}"
    return module, why


def _import() -> tuple[ModuleType | None, str]:
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
    return None


def choose(
    listener: ListenerConfig, backends: Mapping[str, BackendConfig], setting: str = DEFAULT
) -> tuple[str, str]:
    """``(plane, why)`` for one listener: ``compiled`` or ``python``, and the reason.

    ``setting`` is the ``dataplane`` key of ``[tunnel]`` (``TUNNEL_DATAPLANE`` wins over it).
    """
    module, why = load(setting)
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
