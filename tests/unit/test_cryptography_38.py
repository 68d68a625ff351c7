"""Certificate facts without the cryptography APIs newer than Debian 12's version 38.

``not_valid_*_utc`` came in cryptography 42, ``public_key_algorithm_oid`` in 41 and
``load_pem_x509_certificates`` in 39; the Debian package runs on 38. A certificate wrapper
that hides the newer attributes stands in for 38 here (the real 38 runs in .ci/deb), and
the answers must equal those of the newer API.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tunnel.tls.x509_compat import first_pem_certificate, key_algorithm, not_after, not_before

NEWER = ("not_valid_before_utc", "not_valid_after_utc", "public_key_algorithm_oid")


def utc(cert: x509.Certificate, which: str) -> datetime.datetime:
    """``not_valid_<which>`` from whichever API the installed cryptography has."""
    if hasattr(cert, f"not_valid_{which}_utc"):
        return getattr(cert, f"not_valid_{which}_utc")  # type: ignore[no-any-return]
    naive: datetime.datetime = getattr(cert, f"not_valid_{which}")  # 38 itself
    return naive.replace(tzinfo=datetime.UTC)


class Cryptography38:
    """A certificate as cryptography 38 shows it: without the newer attributes."""

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    def __getattr__(self, name: str) -> Any:
        if name in NEWER:
            raise AttributeError(name)
        if name in ("not_valid_before", "not_valid_after"):  # naive, in UTC
            return utc(self._cert, name.rpartition("_")[2]).replace(tzinfo=None)
        return getattr(self._cert, name)


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
    assert not_after(old) == not_after(cert) == utc(cert, "after")
    assert not_before(old) == not_before(cert) == utc(cert, "before")
    assert not_after(old).tzinfo == not_before(old).tzinfo == datetime.UTC
    assert key_algorithm(old) == key_algorithm(cert) == algorithm


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
        assert key_algorithm(Key(key)) == name  # type: ignore[arg-type]
    assert key_algorithm(Key(object())) is None  # type: ignore[arg-type]


def test_first_certificate_of_a_combined_pem() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    pem = leaf.private_key_pem.bytes() + b"".join(b.bytes() for b in leaf.cert_chain_pems)
    first = first_pem_certificate(pem)
    assert first == x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert first != x509.load_pem_x509_certificate(ca.cert_pem.bytes())
