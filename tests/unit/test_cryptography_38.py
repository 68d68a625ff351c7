"""Certificate facts without the cryptography APIs newer than Debian 12's version 38.

``not_valid_after_utc`` came in cryptography 42 and ``public_key_algorithm_oid`` in 41;
the Debian package runs on 38. A certificate wrapper that hides both stands in for 38 here
(the real 38 runs in .ci/deb), and the answers must equal those of the newer API.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tunnel.tls.contexts import _key_algorithm, _not_after


class Cryptography38:
    """A certificate as cryptography 38 shows it: without the two newer attributes."""

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    def __getattr__(self, name: str) -> Any:
        if name in ("not_valid_after_utc", "public_key_algorithm_oid"):
            raise AttributeError(name)
        if name == "not_valid_after":  # naive, in UTC (deprecated in newer versions)
            return utc_not_after(self._cert).replace(tzinfo=None)
        return getattr(self._cert, name)


def utc_not_after(cert: x509.Certificate) -> datetime.datetime:
    """The expiry from whichever API the installed cryptography has."""
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=datetime.UTC)  # 38 itself (.ci/deb)


def certificate(key_type: trustme.KeyType) -> x509.Certificate:
    pem = trustme.CA(key_type=key_type).cert_pem.bytes()
    return x509.load_pem_x509_certificate(pem)


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [(trustme.KeyType.ECDSA, "id-ecPublicKey"), (trustme.KeyType.RSA, "rsaEncryption")],
)
def test_same_answers_with_and_without_the_newer_api(
    key_type: trustme.KeyType, algorithm: str
) -> None:
    cert = certificate(key_type)
    old: Any = Cryptography38(cert)
    assert _not_after(old) == _not_after(cert) == utc_not_after(cert)
    assert _not_after(old).tzinfo == datetime.UTC
    assert _key_algorithm(old) == _key_algorithm(cert) == algorithm


def test_key_algorithm_names_by_key_type() -> None:
    class Key:
        def __init__(self, key: object) -> None:
            self.key = key

        def public_key(self) -> object:
            return self.key

    keys = {
        "id-ecPublicKey": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "rsaEncryption": rsa.generate_private_key(65537, 2048).public_key(),
        "ed25519": ed25519.Ed25519PrivateKey.generate().public_key(),
    }
    for name, key in keys.items():
        assert _key_algorithm(Key(key)) == name  # type: ignore[arg-type]
    assert _key_algorithm(Key(object())) is None  # type: ignore[arg-type]
