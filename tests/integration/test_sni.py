"""Several certificates per listener, chosen by SNI: exact, wildcard, default, strict."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    expect_plane,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

VERSIONS = ["1.2", "1.3"]


@dataclass(frozen=True)
class SniCerts:
    """Combined cert+key PEM files of one CA."""

    ca: trustme.CA
    default: Path  # localhost
    api: Path  # api.example.com (exact)
    wild: Path  # *.example.com
    dual_ec: Path  # dual.example.com, ECDSA
    dual_rsa: Path  # dual.example.com, RSA


def write_pem(ca: trustme.CA, path: Path, *names: str, rsa_key: bool = False) -> Path:
    """Issue a leaf for ``names`` and write chain + key into one PEM file."""
    key_type = trustme.KeyType.RSA if rsa_key else trustme.KeyType.ECDSA
    leaf = ca.issue_cert(*names, key_type=key_type)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def sni_certs(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> SniCerts:
    directory = tmp_path_factory.mktemp("sni")
    ca = certs.ca
    return SniCerts(
        ca,
        write_pem(ca, directory / "default.pem", "localhost", "127.0.0.1"),
        write_pem(ca, directory / "api.pem", "api.example.com"),
        write_pem(ca, directory / "wild.pem", "*.example.com", rsa_key=True),
        write_pem(ca, directory / "dual-ec.pem", "dual.example.com"),
        write_pem(ca, directory / "dual-rsa.pem", "dual.example.com", rsa_key=True),
    )


def handshake(
    tunnel: TunnelProcess, name: str | None, version: str, ciphers: str | None = None
) -> x509.Certificate:
    """Handshake with SNI ``name``; return the certificate the server presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = getattr(
        ssl.TLSVersion, f"TLSv1_{version.split('.')[1]}"
    )
    if ciphers:
        ctx.set_ciphers(ciphers)
    with (
        socket.create_connection(tunnel.address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(ext.value.get_values_for_type(x509.DNSName))


def start_sni(
    start_tunnel: TunnelFactory, start_backend: BackendFactory, paths: list[Path], **keys: str
) -> TunnelProcess:
    backend = start_backend(echo_handler)
    return start_tunnel(backend.address, cert=[str(p) for p in paths], key=None, **keys)


@pytest.mark.parametrize("version", VERSIONS)
def test_sni_picks_exact_then_wildcard_then_default(
    version: str, sni_certs: SniCerts, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Exact beats wildcard, a wildcard covers one label only, the rest get the default."""
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.wild, c.api])
    assert san(handshake(tunnel, "api.example.com", version)) == ["api.example.com"]
    assert san(handshake(tunnel, "API.Example.COM", version)) == ["api.example.com"]
    assert san(handshake(tunnel, "www.example.com", version)) == ["*.example.com"]
    assert san(handshake(tunnel, "a.b.example.com", version)) == ["localhost"]
    assert san(handshake(tunnel, "example.com", version)) == ["localhost"]
    assert san(handshake(tunnel, "other.test", version)) == ["localhost"]
    assert san(handshake(tunnel, None, version)) == ["localhost"]


@pytest.mark.parametrize("version", VERSIONS)
def test_sni_strict_refuses_unknown_names(
    version: str, sni_certs: SniCerts, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.api], sni_strict="yes")
    assert san(handshake(tunnel, "api.example.com", version)) == ["api.example.com"]
    assert san(handshake(tunnel, "localhost", version)) == ["localhost"]
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        handshake(tunnel, "unknown.example.org", version)


def test_cert_dir_serves_every_file(
    sni_certs: SniCerts,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    c = sni_certs
    directory = tmp_path / "certs.d"
    directory.mkdir()
    for path in (c.api, c.wild):
        shutil.copy(path, directory / path.name)
    (directory / "README").write_text("not a certificate")
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, cert=str(c.default), key=None, cert_dir=str(directory))
    assert san(handshake(tunnel, "api.example.com", "1.3")) == ["api.example.com"]
    assert san(handshake(tunnel, "x.example.com", "1.3")) == ["*.example.com"]
    assert san(handshake(tunnel, "localhost", "1.3")) == ["localhost"]


def test_ecdsa_and_rsa_for_the_same_names_tls12(
    sni_certs: SniCerts, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A TLS 1.2 client limited to RSA suites gets the RSA cert, the others ECDSA."""
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.dual_ec, c.dual_rsa])
    rsa_cert = handshake(tunnel, "dual.example.com", "1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    ec_cert = handshake(tunnel, "dual.example.com", "1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert san(rsa_cert) == san(ec_cert) == ["dual.example.com"]


def s_client(tunnel: TunnelProcess, *args: str) -> str:
    """Run ``openssl s_client`` against the tunnel; return its combined output."""
    host, port = tunnel.address
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    return (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_sigalgs_pick_the_key_type(
    version: str, sni_certs: SniCerts, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.dual_ec, c.dual_rsa])
    flag = f"-tls1_{version.split('.')[1]}"
    common = ["-servername", "dual.example.com", flag]
    out = s_client(tunnel, *common, "-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256")
    assert "Peer signature type: RSA" in out, out
    out = s_client(tunnel, *common, "-sigalgs", "ecdsa_secp256r1_sha256")
    assert "Peer signature type: ECDSA" in out, out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_strict_alert(
    sni_certs: SniCerts,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.api], sni_strict="yes")
    out = s_client(tunnel, "-servername", "nope.example.org")
    assert "unrecognized name" in out.lower()
    ca_file = tmp_path / "ca.pem"
    c.ca.cert_pem.write_to_path(str(ca_file))
    verify = ["-CAfile", str(ca_file), "-verify_hostname", "api.example.com"]
    out = s_client(tunnel, "-servername", "api.example.com", *verify)
    assert "Verification: OK" in out, out


@pytest.mark.parametrize("version", VERSIONS)
def test_resumption_survives_the_context_switch(
    version: str, sni_certs: SniCerts, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A session made on a non-default certificate resumes, whichever worker answers."""
    c = sni_certs
    tunnel = start_sni(start_tunnel, start_backend, [c.default, c.api], workers=2)
    ctx = ssl.create_default_context()
    c.ca.configure_trust(ctx)
    ctx.minimum_version = ctx.maximum_version = getattr(
        ssl.TLSVersion, f"TLSv1_{version.split('.')[1]}"
    )
    session: ssl.SSLSession | None = None
    resumed = 0
    for _ in range(6):
        with (
            socket.create_connection(tunnel.address, timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="api.example.com", session=session) as sock,
        ):
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"  # also receives the TLS 1.3 ticket
            resumed += sock.session_reused
            session = sock.session
    assert resumed == 5


@pytest.mark.parametrize("version", VERSIONS)
def test_keylog_file_covers_every_sni_certificate(
    version: str,
    sni_certs: SniCerts,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """The secrets of handshakes that switched to another certificate's context are
    logged too (on the compiled plane: C's callback is on each of them, not CPython's)."""
    c = sni_certs
    keylog = tmp_path / "keys.log"
    tunnel = start_sni(
        start_tunnel, start_backend, [c.default, c.wild, c.api], keylog_file=str(keylog)
    )
    expect_plane(tunnel)
    names = ["api.example.com", "www.example.com", None]
    for name in names:
        handshake(tunnel, name, version)
    per_handshake = 1 if version == "1.2" else 5  # CLIENT_RANDOM; or TLS 1.3's five secrets

    def secrets() -> list[str]:
        return [x for x in keylog.read_text().splitlines() if not x.startswith("#")]

    wait_until(lambda: len(secrets()) >= per_handshake * len(names), what="key log lines")
    lines = secrets()
    assert len(lines) == per_handshake * len(names)
    assert len({line.split()[1] for line in lines}) == len(names)  # one client random each
    assert tunnel.gone() is None
