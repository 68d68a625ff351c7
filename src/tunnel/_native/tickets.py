"""The OpenSSL session-ticket key callback (``SSL_CTX_set_tlsext_ticket_key_evp_cb``).

:func:`ticket_callback` wraps two plain Python look-ups -- the key that encrypts new
tickets, and the key with a given name for tickets clients bring back -- into the C
callback OpenSSL calls during a handshake, and does the EVP and OSSL_PARAM work that needs
ctypes. Which keys exist, and when they change, is policy: :mod:`tunnel.tls.tickets`.
Install the result with :func:`tunnel._native.openssl.set_ticket_callback`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

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
