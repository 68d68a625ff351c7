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
from collections.abc import Callable
from functools import cache
from typing import Any

_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_MODE = 33
_SSL_CTRL_GET_EXTRA_CHAIN_CERTS = 82
_SSL_CTRL_BUILD_CERT_CHAIN = 105
_SSL_CTRL_GET_CHAIN_CERTS = 115
_SSL_MODE_NO_AUTO_CHAIN = 0x8
_SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR = 0x8
_SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR = 0x10
_SSL_CTRL_GET_NEGOTIATED_GROUP = 134
# OpenSSL's names for the groups that the ``curves`` key spells the NIST way.
_GROUP_NAMES = {
    "x25519": "X25519",
    "x448": "X448",
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}


class OpenSSLCallError(RuntimeError):
    """The direct OpenSSL call could not be made or was refused."""


def _loaded(name: str) -> str | None:
    """The path of an already loaded shared library whose name contains ``name``."""
    import _ssl  # the extension module; its libssl and libcrypto are loaded with it

    del _ssl
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            if name in line:
                return line.split()[-1]
    return None


@cache
def _libssl() -> ctypes.CDLL:
    lib = ctypes.CDLL(_loaded("libssl.so") or "libssl.so.3")
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
    lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.SSL_CTX_set_tlsext_ticket_key_evp_cb.restype = ctypes.c_int
    lib.SSL_CTX_set_tlsext_ticket_key_evp_cb.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
    lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
    lib.SSL_ctrl.restype = ctypes.c_long
    lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_group_to_name.restype = ctypes.c_char_p
    lib.SSL_group_to_name.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.SSL_set_num_tickets.restype = ctypes.c_int
    lib.SSL_set_num_tickets.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.SSL_new_session_ticket.restype = ctypes.c_int
    lib.SSL_new_session_ticket.argtypes = [ctypes.c_void_p]
    return lib


@cache
def libcrypto() -> ctypes.CDLL:
    """The process's libcrypto (the one ``_ssl`` uses), with the prototypes we call."""
    lib = ctypes.CDLL(_loaded("libcrypto.so") or "libcrypto.so.3")
    vp, c_int = ctypes.c_void_p, ctypes.c_int
    for name, restype, argtypes in (
        ("X509_STORE_CTX_get_current_cert", vp, [vp]),
        ("X509_STORE_CTX_get_error_depth", c_int, [vp]),
        ("X509_STORE_CTX_set_error", None, [vp, c_int]),
        ("i2d_X509", c_int, [vp, vp]),
        ("EVP_aes_256_cbc", vp, []),
        ("EVP_EncryptInit_ex", c_int, [vp, vp, vp, vp, vp]),
        ("EVP_DecryptInit_ex", c_int, [vp, vp, vp, vp, vp]),
        ("EVP_MAC_CTX_set_params", c_int, [vp, vp]),
        ("RAND_bytes", c_int, [vp, c_int]),
        ("ERR_clear_error", None, []),
    ):
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
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


def build_chain_once(ctx: ssl.SSLContext) -> bool:
    """Build the chain of the certificate just loaded now, not at every handshake.

    A certificate file without its chain leaves OpenSSL to build one from the context's
    trust store for every handshake (``X509_verify_cert`` on the server's own certificate:
    ~930,000 instructions per handshake when a ``client_ca`` holds its issuer, callgrind).
    ``SSL_CTX_build_cert_chain`` builds the same chain once (errors ignored, as per
    handshake), so the same certificates are sent. Nothing is done when the file had a
    chain or OpenSSL would not chain anyway; a build that fails leaves OpenSSL as it was.
    True if a chain was built.
    """
    lib, pointer = _libssl(), ssl_ctx_pointer(ctx)
    chain, extra = ctypes.c_void_p(), ctypes.c_void_p()
    if (
        lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_CHAIN_CERTS, 0, ctypes.byref(chain)) != 1
        or lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_EXTRA_CHAIN_CERTS, 1, ctypes.byref(extra)) != 1
        or chain.value
        or extra.value
        or lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_MODE, 0, None) & _SSL_MODE_NO_AUTO_CHAIN
    ):
        return False
    flags = _SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR | _SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR
    built: bool = lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_BUILD_CERT_CHAIN, flags, None) > 0
    libcrypto().ERR_clear_error()  # a refused CA (security level) leaves its reason queued
    return built


@cache
def _ssl_offset() -> int | None:
    """Where the ``SSL *`` sits in CPython's ``_ssl._SSLSocket`` (None: layout unknown).

    In CPython 3.11 it is the second field after ``PyObject_HEAD`` (after the socket
    weakref). Checked once on a throwaway object: the pointer found there must lead back
    to the object's own ``SSL_CTX``; otherwise :func:`negotiated_group` answers None.
    """
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
        expected = ssl_ctx_pointer(ctx)
        head = sys.getsizeof(object())
        inner = probe._sslobj  # type: ignore[attr-defined]
        for offset in (head + ctypes.sizeof(ctypes.c_void_p), head):
            pointer = ctypes.c_void_p.from_address(id(inner) + offset).value
            if pointer and _libssl().SSL_get_SSL_CTX(pointer) == expected:
                return offset
    except (OSError, AttributeError, OpenSSLCallError):
        pass
    return None


def group_display_name(openssl_name: str) -> str:
    """A group as the ``curves`` key writes it (X25519, P-256, ...), from OpenSSL's name."""
    return _GROUP_NAMES.get(openssl_name, openssl_name)


def negotiated_group(sslobj: ssl.SSLObject) -> str | None:
    """The key exchange group of a completed handshake (``SSL_get_negotiated_group``).

    Named as the ``curves`` key writes them (X25519, P-256, ...), else as OpenSSL names
    them (ffdhe2048, ...); None when there was none (a resumption without key exchange),
    before the handshake, or when the ``SSL *`` cannot be located.
    """
    # Before the handshake has finished OpenSSL 3.0 reads a NULL session here: never ask
    # then (version() is None until SSL_is_init_finished).
    pointer = _ssl_pointer(sslobj) if sslobj.version() is not None else None
    if pointer is None:
        return None
    lib = _libssl()
    nid = lib.SSL_ctrl(pointer, _SSL_CTRL_GET_NEGOTIATED_GROUP, 0, None)
    if nid <= 0:
        return None
    name: bytes | None = lib.SSL_group_to_name(pointer, nid)
    if not name:
        return None
    text = name.decode("ascii", "replace")
    return _GROUP_NAMES.get(text, text)


def _ssl_pointer(sslobj: ssl.SSLObject) -> int | None:
    """The ``SSL *`` under ``sslobj`` (None where it cannot be located)."""
    offset = _ssl_offset()
    inner = getattr(sslobj, "_sslobj", None)
    if offset is None or inner is None:
        return None
    return ctypes.c_void_p.from_address(id(inner) + offset).value


def defer_tickets(sslobj: ssl.SSLObject) -> bool:
    """Send no TLS 1.3 session ticket after the handshake (``SSL_set_num_tickets(0)``).

    The data plane sends them later with :func:`send_tickets`, in front of the first
    reply. False (nothing changed, OpenSSL sends them as usual) where the ``SSL *``
    cannot be located. Call before the handshake.
    """
    pointer = _ssl_pointer(sslobj)
    return pointer is not None and _libssl().SSL_set_num_tickets(pointer, 0) == 1


def send_tickets(sslobj: ssl.SSLObject, count: int) -> None:
    """Queue ``count`` TLS 1.3 tickets (``SSL_new_session_ticket``): the next write sends
    them, before its own data. After a completed TLS 1.3 handshake only."""
    pointer = _ssl_pointer(sslobj)
    if pointer is not None:
        new_ticket = _libssl().SSL_new_session_ticket
        for _ in range(count):
            new_ticket(pointer)


# int verify_callback(int preverify_ok, X509_STORE_CTX *store)
VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
X509_V_ERR_CERT_REJECTED = 28
# Callbacks must outlive every context that uses them (ctypes frees them otherwise).
_KEEP_ALIVE: list[object] = []


def set_leaf_check(ctx: ssl.SSLContext, check: Callable[[bytes], bool]) -> None:
    """Call ``check(leaf_der)`` once a client certificate chain verified; False rejects it.

    A rejection fails the handshake with a bad_certificate alert (X509_V_ERR_CERT_REJECTED),
    sent by OpenSSL itself. The callback is installed with the context's current
    verify mode (CPython keeps a callback when ``verify_mode`` changes later).
    """
    crypto = libcrypto()

    def callback(preverify_ok: int, store: int | None) -> int:
        if not preverify_ok or crypto.X509_STORE_CTX_get_error_depth(store) != 0:
            return preverify_ok
        try:
            cert = crypto.X509_STORE_CTX_get_current_cert(store)
            size = crypto.i2d_X509(cert, None)
            buffer = ctypes.create_string_buffer(size)
            cursor = ctypes.c_void_p(ctypes.addressof(buffer))
            crypto.i2d_X509(cert, ctypes.byref(cursor))
            accepted = check(buffer.raw[:size])
        except Exception:  # never let an exception unwind into OpenSSL
            accepted = False
        if not accepted:
            crypto.X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED)
            return 0
        return 1

    function = VERIFY_CALLBACK(callback)
    _KEEP_ALIVE.append(function)
    mode = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[ctx.verify_mode]
    _libssl().SSL_CTX_set_verify(ssl_ctx_pointer(ctx), mode, ctypes.cast(function, ctypes.c_void_p))


# int cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *ctx,
#        EVP_MAC_CTX *hctx, int enc)
TICKET_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int,
)


def set_ticket_callback(ctx: ssl.SSLContext, function: Any) -> None:
    """Install a ``TICKET_CALLBACK`` (``SSL_CTX_set_tlsext_ticket_key_evp_cb``)."""
    _KEEP_ALIVE.append(function)
    pointer = ctypes.cast(function, ctypes.c_void_p)
    if _libssl().SSL_CTX_set_tlsext_ticket_key_evp_cb(ssl_ctx_pointer(ctx), pointer) != 1:
        raise OpenSSLCallError("OpenSSL refused the session ticket key callback")


# int cb(SSL *s, int *alert, void *arg)
CLIENT_HELLO_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
)
_TLSEXT_TYPE_ALPN = 16
_CLIENT_HELLO_SUCCESS = 1


def set_alpn_probe(ctx: ssl.SSLContext, record: Callable[[bytes | None], None]) -> None:
    """Call ``record(alpn)`` for every ClientHello, before the SNI callback runs.

    ``alpn`` is the raw body of the client's ALPN extension (None without one). Python's
    SNI callback cannot see ALPN, so this lets it choose a context by what the client
    offers (TLS-ALPN-01 challenges). Uses ``SSL_CTX_set_client_hello_cb``.
    """
    lib = _libssl()
    get_ext = lib.SSL_client_hello_get0_ext
    get_ext.restype = ctypes.c_int
    get_ext.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    setter = lib.SSL_CTX_set_client_hello_cb
    setter.restype = None
    setter.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]

    def callback(ssl_ptr: int | None, _alert: int | None, _arg: int | None) -> int:
        try:
            out = ctypes.c_void_p()
            size = ctypes.c_size_t()
            if get_ext(ssl_ptr, _TLSEXT_TYPE_ALPN, ctypes.byref(out), ctypes.byref(size)) == 1:
                record(ctypes.string_at(out.value or 0, size.value) if size.value else b"")
            else:
                record(None)
        except Exception:  # never let an exception unwind into OpenSSL
            record(None)
        return _CLIENT_HELLO_SUCCESS

    function = CLIENT_HELLO_CALLBACK(callback)
    _KEEP_ALIVE.append(function)
    setter(ssl_ctx_pointer(ctx), ctypes.cast(function, ctypes.c_void_p), None)
