"""TLS to backends on the compiled plane: what Python hands C with the addresses to try.

C runs the handshake (``csrc/fp_backend_tls.c``) from the backend's client context that
the supervisor built (:mod:`tunnel.tls.backend`), with the server name the Python plane
would give ``wrap_bio`` for each address (the backend's ``sni``, else the connect host).
A failed handshake is a failed connect attempt, reported to Python at once like the
others; :func:`log_failure` writes the WARNING that failover would otherwise hide (the
same line as :meth:`tunnel.dataplane.failover.PoolConnect._backend_tls_failed`).

CPython callbacks that expect their own SSL object must never see the SSL objects of C.
A context with a key log (``keylog_file``, or ``SSLKEYLOGFILE``) gets C's callback in
front of CPython's: C appends its lines to the same file, opened here once per worker
(the 0600 mode and the header come from :func:`tunnel.tls.secret_files.set_keylog` or
CPython). A context with a message or SNI callback is refused (:func:`check_context`),
and that listener stays on the Python plane.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from tunnel.config import Address
from tunnel.config.routing import RouteTable
from tunnel.dataplane.backend_log import backend_tls_failed
from tunnel.dataplane.targets import Target

# (SSLContext, SSL_CTX*, host flags or -1, server name per address, key log fd or -1)
Settings = tuple[ssl.SSLContext, int, int, tuple[str | None, ...], int]


def check_context(name: str, ctx: ssl.SSLContext) -> None:
    """RuntimeError if C's SSL objects could reach a CPython callback of ``ctx``."""
    if getattr(ctx, "_msg_callback", None) is not None:
        raise RuntimeError(f"backend {name}: a TLS message callback is set")
    if ctx.sni_callback is not None:
        raise RuntimeError(f"backend {name}: an SNI callback is set")


def tls_targets(routes: RouteTable[Target]) -> list[Target]:
    """The targets of a listener's routes that are reached over TLS."""
    sni = routes.sni
    found = []
    for target in (
        routes.default,
        *sni.exact.values(),
        *sni.wildcard.values(),
        *routes.alpn.values(),
    ):
        if target.tls is not None:
            found.append(target)
    return found


def server_name(sni: str | None, addr: Address) -> str | None:
    """The name sent (SNI) and checked, as the Python plane passes it to ``wrap_bio``."""
    host = sni or (addr.host if addr.kind == "tcp" else None)
    if host is None:
        return None
    return host.encode("idna").decode("ascii")  # as SSLContext.wrap_bio encodes it


class BackendTLS:
    """The per-connection TLS settings of the backends a compiled plane reaches."""

    def __init__(self, pointer: Callable[[ssl.SSLContext], int]) -> None:
        self._pointer = pointer
        # Per context: SSL_CTX*, host flags (-1: no check), key log fd (-1: none). The fds
        # stay open for the worker's life, as CPython's own key log BIO would.
        self._contexts: dict[ssl.SSLContext, tuple[int, int, int]] = {}

    def prepare(self, routes: RouteTable[Target]) -> None:
        """Check and ready the contexts of a listener's TLS backends (at ``add``: a refusal,
        RuntimeError, or a key log that cannot be opened, OSError, means the Python plane)."""
        for target in tls_targets(routes):
            assert target.tls is not None
            check_context(target.backend.name, target.tls)
            self._known(target.tls)

    def _known(self, ctx: ssl.SSLContext) -> tuple[int, int, int]:
        known = self._contexts.get(ctx)
        if known is None:
            flags = int(getattr(ctx, "_host_flags", 0)) if ctx.check_hostname else -1
            path = ctx.keylog_filename
            fd = -1 if path is None else os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            known = self._contexts[ctx] = (self._pointer(ctx), flags, fd)
        return known

    def settings(
        self, ctx: ssl.SSLContext, sni: str | None, origins: Sequence[Address]
    ) -> Settings:
        """What C needs to connect over TLS to each of ``origins`` in turn."""
        pointer, flags, keylog = self._known(ctx)
        names = tuple(server_name(sni, addr) for addr in origins)
        return ctx, pointer, flags, names, keylog


def log_failure(listener: str, addr: Any, why: str, last: bool) -> None:
    """The WARNING of a backend whose TLS handshake failed (as on the Python plane)."""
    backend_tls_failed(listener, addr, why, last)
