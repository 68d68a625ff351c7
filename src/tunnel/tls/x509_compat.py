"""Certificate facts on every supported ``cryptography``, down to Debian 12's version 38.

Version 38 has no ``not_valid_before_utc``/``not_valid_after_utc`` (42), no
``public_key_algorithm_oid`` (41) and no ``load_pem_x509_certificates`` (39); newer
versions deprecate the naive datetimes. These functions use the newer API when it exists
and what 38 has otherwise. Nothing here imports ``cryptography`` at import time.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from cryptography import x509


def not_before(cert: x509.Certificate) -> datetime.datetime:
    """The start of validity, timezone-aware (UTC)."""
    aware = getattr(cert, "not_valid_before_utc", None)
    if isinstance(aware, datetime.datetime):
        return aware
    return cert.not_valid_before.replace(tzinfo=datetime.UTC)  # naive, in UTC


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, timezone-aware (UTC)."""
    aware = getattr(cert, "not_valid_after_utc", None)
    if isinstance(aware, datetime.datetime):
        return aware
    return cert.not_valid_after.replace(tzinfo=datetime.UTC)  # naive, in UTC


def first_pem_certificate(data: bytes) -> x509.Certificate:
    """The first certificate of PEM ``data`` (other blocks, e.g. a key, are skipped)."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(data)


def key_algorithm(cert: x509.Certificate) -> str | None:
    """The public key algorithm's name as OpenSSL spells it (e.g. ``id-ecPublicKey``)."""
    oid = getattr(cert, "public_key_algorithm_oid", None)
    if oid is not None:
        return cast(str | None, oid._name)
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    names = (
        (rsa.RSAPublicKey, "rsaEncryption"),
        (ec.EllipticCurvePublicKey, "id-ecPublicKey"),
        (ed25519.Ed25519PublicKey, "ed25519"),
        (ed448.Ed448PublicKey, "ed448"),
        (dsa.DSAPublicKey, "dsaEncryption"),
    )
    key = cert.public_key()
    return next((name for kind, name in names if isinstance(key, kind)), None)
