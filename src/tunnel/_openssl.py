"""The few OpenSSL calls the stdlib ``ssl`` module does not expose, via ctypes.

Theory of operation: a CPython ``ssl.SSLContext`` object is ``PyObject_HEAD`` followed by
the ``SSL_CTX *`` pointer. We read that pointer and call libssl directly (the same
``libssl.so.3`` the ``_ssl`` extension is linked with, so one copy of OpenSSL is in play).
Because the layout is an implementation detail, :func:`ssl_ctx_pointer` verifies the pointer
by asking OpenSSL for the context's options and comparing them with ``ctx.options``; a
mismatch raises instead of calling into a wrong address. Tests exercise every call here, so
a Python or OpenSSL upgrade that breaks the mechanism fails loudly.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from functools import cache

_SSL_CTRL_SET_GROUPS_LIST = 92


class OpenSSLCallError(RuntimeError):
    """The direct OpenSSL call could not be made or was refused."""


@cache
def _libssl() -> ctypes.CDLL:
    import _ssl  # the extension module; its libssl is already loaded in this process

    path = None
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            if "libssl.so" in line:
                path = line.split()[-1]
                break
    lib = ctypes.CDLL(path or "libssl.so.3")
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
    lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    del _ssl
    return lib


def ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """Return the ``SSL_CTX *`` behind ``ctx``, verified against its options."""
    offset = sys.getsizeof(object())  # PyObject_HEAD
    pointer = ctypes.c_void_p.from_address(id(ctx) + offset).value
    if not pointer:
        raise OpenSSLCallError("could not locate SSL_CTX in ssl.SSLContext")
    if _libssl().SSL_CTX_get_options(pointer) != int(ctx.options):
        raise OpenSSLCallError("SSL_CTX pointer check failed (unsupported Python build)")
    return pointer


def set_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """Set the TLS 1.3 cipher suites (``SSL_CTX_set_ciphersuites``)."""
    if _libssl().SSL_CTX_set_ciphersuites(ssl_ctx_pointer(ctx), suites.encode()) != 1:
        raise OpenSSLCallError(f"OpenSSL rejected the TLS 1.3 cipher suites {suites!r}")


def set_groups(ctx: ssl.SSLContext, groups: str) -> None:
    """Set the key-exchange groups/curves list (``SSL_CTX_set1_groups_list``)."""
    arg = ctypes.c_char_p(groups.encode())
    ptr = ssl_ctx_pointer(ctx)
    if (
        _libssl().SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.cast(arg, ctypes.c_void_p))
        != 1
    ):
        raise OpenSSLCallError(f"OpenSSL rejected the curves list {groups!r}")
