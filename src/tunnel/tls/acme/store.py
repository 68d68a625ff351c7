"""The layout of an ACME ``state_dir`` and the reading and writing of its files.

``state_dir/``
  ``account.json``            account key (JWK) and URL, mode 0600
  ``certs/NAME.pem``          the certificate chain then its private key (NAME: the first name)
  ``challenges/NAME.alpn``    a pending TLS-ALPN-01 challenge: certificate then key
  ``challenges/http/TOKEN``   a pending HTTP-01 challenge: the key authorization
  ``lock``                    held (flock) by the instance that orders, in a fleet

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tunnel.tls.secret_files import write_private_file
from tunnel.tls.x509_compat import first_pem_certificate, not_after, not_before

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class StateDir:
    """Paths inside one ``state_dir``."""

    root: str

    @property
    def account(self) -> str:
        return os.path.join(self.root, "account.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.root, "lock")

    def cert(self, names: tuple[str, ...]) -> str:
        """The combined PEM (chain, then key) of the certificate for ``names``."""
        return os.path.join(self.root, "certs", f"{names[0]}.pem")

    def alpn_challenge(self, name: str) -> str:
        return os.path.join(self.root, "challenges", f"{name}.alpn")

    def http_challenge(self, token: str) -> str | None:
        """The file for an HTTP-01 token; None for anything that is not a token."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        return os.path.join(self.root, "challenges", "http", token)


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (parent directories 0700)."""
    write_private_file(Path(path), data, force=True)


def remove(path: str) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (certificates and the account)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM of ``key``, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed(
    names: tuple[str, ...],
    key: ec.EllipticCurvePrivateKey,
    *,
    extensions: tuple[x509.Extension[x509.ExtensionType], ...] = (),
    days: float = 7,
) -> x509.Certificate:
    """A self-signed certificate for ``names`` (placeholders and challenge certificates)."""
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
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256())


def placeholder_pem(names: tuple[str, ...]) -> bytes:
    """A self-signed certificate and key, served for ``names`` until the real one arrives."""
    key = new_key()
    cert = self_signed(names, key, days=1)
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem(key)


@dataclass(frozen=True, slots=True)
class Stored:
    """A certificate found in the state directory."""

    path: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    names: tuple[str, ...]


def read_stored(path: str) -> Stored | None:
    """The leaf of the combined PEM at ``path``; None when missing or unreadable."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
        leaf = first_pem_certificate(data)
    except (OSError, ValueError):
        return None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return Stored(path, not_before(leaf), not_after(leaf), names)
