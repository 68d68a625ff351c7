"""Self-signed test certificates (ECDSA P-256 and RSA-2048), written to a temp dir."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ecdsa", "rsa")


@dataclass(frozen=True)
class CertFiles:
    """Paths of one certificate in the layouts the terminators want."""

    kind: str
    cert: Path  # certificate only
    key: Path  # private key only
    combined: Path  # certificate followed by key (hitch, HAProxy, stunnel, Tunnel)


def _private_key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {kind!r}")


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )


def make_cert(directory: Path, kind: str) -> CertFiles:
    """Generate one self-signed certificate of ``kind`` ("ecdsa" or "rsa") in ``directory``."""
    key = _private_key(kind)
    cert_pem = _self_signed(key).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files = CertFiles(
        kind=kind,
        cert=directory / f"{kind}-cert.pem",
        key=directory / f"{kind}-key.pem",
        combined=directory / f"{kind}-combined.pem",
    )
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.combined.write_bytes(cert_pem + key_pem)
    for path in (files.key, files.combined):
        path.chmod(0o600)
    return files


def make_certs(directory: Path) -> dict[str, CertFiles]:
    """Generate every certificate kind in ``directory``."""
    return {kind: make_cert(directory, kind) for kind in KEY_TYPES}
