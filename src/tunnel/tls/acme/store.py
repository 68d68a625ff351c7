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
from cryptography.hazmat.primitives import serialization

from tunnel.tls.secret_files import write_private_file
from tunnel.tls.selfsigned import key_pem, new_key, self_signed
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
