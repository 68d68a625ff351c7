"""TLS-ALPN-01 (RFC 8737): the listener answers validation handshakes itself.

A ClientHello that offers only ``acme-tls/1`` for a name with a pending challenge gets the
challenge certificate (from the state directory, so every worker of every instance sharing
it answers); nobody else ever sees it, and an ``acme-tls/1`` ClientHello for anything else
is refused. Python's SNI callback cannot see ALPN, so a ClientHello callback
(:func:`tunnel._native.openssl.set_alpn_probe`) records what the client offered just before
the SNI callback runs, in the same handshake step.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tunnel._native import openssl as _openssl
from tunnel.tls.acme import ACME_TLS_1
from tunnel.tls.acme.store import StateDir
from tunnel.tls.selfsigned import key_pem, new_key, self_signed

log = logging.getLogger("tunnel.acme")

# The ALPN extension body of a ClientHello offering acme-tls/1 and nothing else.
ONLY_ACME = bytes([0, len(ACME_TLS_1) + 1, len(ACME_TLS_1)]) + ACME_TLS_1.encode()
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")

SniCallback = Callable[[Any, str | None, ssl.SSLContext], int | None]


def challenge_pem(name: str, key_authorization: str) -> bytes:
    """The TLS-ALPN-01 certificate and key for ``name`` (RFC 8737 section 3)."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    # The extension's value is the DER OCTET STRING holding the SHA-256 digest.
    value = x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest)
    key = new_key()
    cert = self_signed((name,), key, extensions=(x509.Extension(ACME_IDENTIFIER, True, value),))
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem(key)


class AlpnChallenges:
    """One listener's TLS-ALPN-01 responder, wrapped around its SNI callback."""

    def __init__(self, names: tuple[str, ...], state_dir: str) -> None:
        self.names = frozenset(names)
        self.state = StateDir(state_dir)
        self._acme_only = False

    def _record(self, alpn: bytes | None) -> None:
        self._acme_only = alpn == ONLY_ACME

    def install(self, default: ssl.SSLContext, inner: SniCallback | None) -> None:
        """Put the responder in front of ``inner`` on the listener's default context."""
        _openssl.set_alpn_probe(default, self._record)

        def callback(sslobj: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
            acme_only, self._acme_only = self._acme_only, False
            if acme_only:
                return self._answer(sslobj, name)
            return inner(sslobj, name, ctx) if inner is not None else None

        default.sni_callback = callback

    def _answer(self, sslobj: Any, name: str | None) -> int | None:
        sslobj.sni = name
        context = self._challenge_context(name.lower()) if name else None
        if context is None:
            log.info("acme-tls/1 handshake for %s: no pending challenge; refused", name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = context
        log.info("answering the TLS-ALPN-01 challenge for %s", name)
        return None

    def _challenge_context(self, name: str) -> ssl.SSLContext | None:
        if name not in self.names:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ACME_TLS_1])
        try:
            context.load_cert_chain(self.state.alpn_challenge(name))
        except (OSError, ssl.SSLError):
            return None  # no challenge pending (or being replaced right now)
        return context
