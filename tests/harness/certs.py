"""Test certificates: a trustme CA and a server certificate, written to a test directory.

Generated for each session (or test), never committed.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Certs:
    """A test CA and a server certificate for localhost, 127.0.0.1 and ::1, on disk."""

    ca: trustme.CA
    ca_pem: Path
    cert_pem: Path  # the leaf, then its chain
    key_pem: Path

    @property
    def cert_path(self) -> Path:
        """The certificate chain file (the name the integration tests use)."""
        return self.cert_pem

    @property
    def key_path(self) -> Path:
        """The key file (the name the integration tests use)."""
        return self.key_pem

    def client_context(self, version: str | None = None) -> ssl.SSLContext:
        """A client context trusting the CA, pinned to one TLS version ("1.2", "1.3")."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = TLS_VERSIONS[version]
        return ctx


def write_certs(
    ca: trustme.CA,
    directory: Path,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Certs:
    """Issue a server certificate (valid from ``not_before`` to ``not_after`` if given) and
    write CA, chain and key as ``ca.pem``, ``cert.pem`` and ``key.pem`` (mode 600) in
    ``directory``."""
    leaf = ca.issue_cert(*SERVER_NAMES, not_before=not_before, not_after=not_after)
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert_pem.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_pem))
    key_pem.chmod(0o600)
    return Certs(ca, ca_pem, cert_pem, key_pem)


def make_certs(directory: Path) -> Certs:
    """A new CA and its server certificate in ``directory``."""
    return write_certs(trustme.CA(), directory)
