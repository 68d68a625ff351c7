"""Self-signed certificates for ``tunnel gen-cert`` and ``tunnel demo`` (pure, no files).

:func:`make_self_signed` creates an ECDSA P-256 certificate and its key as one PEM (the
ACME placeholders and challenge certificates are built by :func:`self_signed` too);
:func:`check_name` says whether a name can go into its subjectAltName (a DNS name, a
``*.`` wildcard DNS name, or an IP address).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_DNS_NAME = 253


def check_name(name: str) -> None:
    """ValueError saying why ``name`` is neither a valid DNS name nor an IP address."""
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    if not name.isascii():
        raise ValueError(f"{name!r} is not ASCII: give the xn-- (punycode) form of the name")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]  # a wildcard covers one label, and never a whole top-level domain
    if len(name) > _MAX_DNS_NAME or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{name!r} is not a DNS name or IP address (DNS names are dot-separated labels "
            "of letters, digits and inner hyphens, at most 63 characters each; a wildcard "
            "is '*.' before at least two labels)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{name!r} looks like an IP address but is not one")


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (certificates and the ACME account)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM of ``key``, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed(
    names: Sequence[str],
    key: ec.EllipticCurvePrivateKey,
    *,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    days: float = 7,
) -> x509.Certificate:
    """A self-signed certificate for ``names`` (IP addresses become IP SAN entries)."""
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san_entry(n) for n in names]), False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256())


_SERVER_ONLY = (
    x509.Extension(
        x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None)
    ),
    x509.Extension(
        x509.ExtendedKeyUsage.oid, False, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    ),
)


def make_self_signed(names: Sequence[str] = DEFAULT_NAMES, days: int = 365) -> bytes:
    """A self-signed ECDSA P-256 certificate for ``names`` plus its key, as one PEM.

    Names that parse as IP addresses become IP SAN entries, the others DNS names.
    ValueError (from :func:`check_name`) for a name that is neither.
    """
    if not names:
        raise ValueError("a certificate needs at least one name")
    for name in names:
        check_name(name)
    key = new_key()
    cert = self_signed(names, key, extensions=_SERVER_ONLY, days=days)
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem(key)
