"""The OpenSSL session-ticket key callback (``SSL_CTX_set_tlsext_ticket_key_evp_cb``).

:func:`new_ticket_callback` gives the callback of one key store: the C one of the
extension module ``tunnel._native._ticketkeys`` (``csrc/ticket_keys.c``) where it is built
with the OpenSSL the ``ssl`` module uses, else the ctypes one below. Both take the keys as
a list, first one current, and both serve either data plane (they are set on the
``SSL_CTX`` behind an ``ssl.SSLContext``). The C one runs no Python per handshake.

The fallback: :func:`ticket_callback` wraps two plain Python look-ups -- the key that encrypts new
tickets, and the key with a given name for tickets clients bring back -- into the C
callback OpenSSL calls during a handshake, and does the EVP and OSSL_PARAM work that needs
ctypes. Which keys exist, and when they change, is policy: :mod:`tunnel.tls.tickets`.
Install the result with :func:`tunnel._native.openssl.set_ticket_callback`.
"""

from __future__ import annotations

import ctypes
import ssl
from collections.abc import Callable, Sequence
from functools import cache
from types import ModuleType
from typing import Any, Protocol

from tunnel._native import openssl as _openssl

NAME_SIZE = 16  # OpenSSL's key_name[16]
IV_SIZE = 16  # EVP_MAX_IV_LENGTH for AES-256-CBC

# OSSL_PARAM, as in <openssl/core.h>.
_UTF8_STRING = 4
_OCTET_STRING = 5
_UNMODIFIED = ctypes.c_size_t(-1).value


class _Param(ctypes.Structure):
    _fields_ = (
        ("key", ctypes.c_char_p),
        ("data_type", ctypes.c_uint),
        ("data", ctypes.c_void_p),
        ("data_size", ctypes.c_size_t),
        ("return_size", ctypes.c_size_t),
    )


_DIGEST = ctypes.create_string_buffer(b"SHA256")

# (name, hmac_key, aes_key) of the key that encrypts new tickets.
CurrentKey = Callable[[], tuple[bytes, bytes, bytes]]
# key name -> (hmac_key, aes_key, is_current), or None for a name no key has.
FindKey = Callable[[bytes], tuple[bytes, bytes, bool] | None]


def ticket_callback(current: CurrentKey, find: FindKey) -> Any:
    """A ``TICKET_CALLBACK`` that encrypts with ``current()`` and decrypts with ``find``.

    Decrypting with a key that is not the current one asks OpenSSL to renew the ticket.
    """
    crypto = _openssl.libcrypto()
    cipher = crypto.EVP_aes_256_cbc()

    def set_hmac(hctx: int | None, hmac_key: bytes) -> bool:
        key = ctypes.create_string_buffer(hmac_key, len(hmac_key))
        params = (_Param * 3)(
            _Param(b"key", _OCTET_STRING, ctypes.addressof(key), len(hmac_key), _UNMODIFIED),
            _Param(b"digest", _UTF8_STRING, ctypes.addressof(_DIGEST), 6, _UNMODIFIED),
            _Param(None, 0, None, 0, 0),
        )
        return bool(crypto.EVP_MAC_CTX_set_params(hctx, params) == 1)

    def on_ticket(
        _ssl: int | None,
        key_name: int | None,
        iv: int | None,
        cipher_ctx: int | None,
        hctx: int | None,
        enc: int,
    ) -> int:
        # Runs inside OpenSSL during a handshake: never raise (ctypes would print and
        # return 0); -1 tells OpenSSL that something went wrong.
        try:
            if enc:
                name, hmac_key, aes_key = current()
                ctypes.memmove(key_name or 0, name, NAME_SIZE)
                if crypto.RAND_bytes(iv, IV_SIZE) != 1 or not set_hmac(hctx, hmac_key):
                    return -1
                ok = crypto.EVP_EncryptInit_ex(cipher_ctx, cipher, None, aes_key, iv)
                return 1 if ok == 1 else -1
            found = find(ctypes.string_at(key_name or 0, NAME_SIZE))
            if found is None:
                return 0  # unknown key: a full handshake, and a new ticket
            hmac_key, aes_key, is_current = found
            if not set_hmac(hctx, hmac_key):
                return -1
            if crypto.EVP_DecryptInit_ex(cipher_ctx, cipher, None, aes_key, iv) != 1:
                return -1
            return 1 if is_current else 2  # 2: resume, and renew the ticket with today's key
        except Exception:
            return -1

    return _openssl.TICKET_CALLBACK(on_ticket)


Key = tuple[bytes, bytes, bytes]  # (name, hmac_key, aes_key)


class TicketCallback(Protocol):
    """A ticket key callback and the keys it uses."""

    kind: str  # "C" or "ctypes": which implementation, for logs and tests

    def set_keys(self, keys: Sequence[Key]) -> None:
        """Use ``keys`` from now on (the first encrypts new tickets; each decrypts)."""

    def install(self, ctx: ssl.SSLContext) -> None:
        """Make ``ctx`` encrypt and decrypt its session tickets with these keys."""


@cache
def extension() -> ModuleType | None:
    """The C callback's module, or None where it is not built or has another OpenSSL."""
    try:
        from tunnel._native import _ticketkeys  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _ticketkeys
    # Its SSL_CTX functions must be the ones the ssl module's contexts belong to.
    return module if module.openssl_version() == ssl.OPENSSL_VERSION_NUMBER else None


class CCallback:
    """The keys in C memory (one table per store), read by the C callback."""

    kind = "C"

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._table = module.new_table()

    def set_keys(self, keys: Sequence[Key]) -> None:
        records = bytearray(b"".join(name + hmac + aes for name, hmac, aes in keys))
        try:
            self._module.set_keys(self._table, records)
        finally:
            records[:] = bytes(len(records))  # our copy; the table keeps its own

    def install(self, ctx: ssl.SSLContext) -> None:
        self._module.install(self._table, _openssl.ssl_ctx_pointer(ctx))

    def counts(self) -> tuple[int, int, int, int]:
        """Tickets (issued, resumed with the current key, renewed, of no known key)."""
        issued, resumed, renewed, unknown = self._module.counts(self._table)
        return issued, resumed, renewed, unknown


class CtypesCallback:
    """The keys in Python dicts, read by the ctypes callback (where C is not built)."""

    kind = "ctypes"

    def __init__(self) -> None:
        self._current: Key = (b"", b"", b"")
        self._by_name: dict[bytes, tuple[bytes, bytes, bool]] = {}
        # Look-ups through methods: set_keys() replaces the tables, not the callback.
        self._function = ticket_callback(self._current_key, self._find_key)

    def set_keys(self, keys: Sequence[Key]) -> None:
        self._current = keys[0]
        self._by_name = {
            name: (hmac_key, aes_key, index == 0)
            for index, (name, hmac_key, aes_key) in reversed(list(enumerate(keys)))
        }

    def install(self, ctx: ssl.SSLContext) -> None:
        _openssl.set_ticket_callback(ctx, self._function)

    def _current_key(self) -> Key:
        return self._current

    def _find_key(self, name: bytes) -> tuple[bytes, bytes, bool] | None:
        return self._by_name.get(name)


def new_ticket_callback() -> TicketCallback:
    """The C callback where its module is built, else the ctypes one."""
    module = extension()
    return CCallback(module) if module is not None else CtypesCallback()
