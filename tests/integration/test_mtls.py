"""Client certificates: client_ca, verify modes, CRL, allow-lists, identity in the log."""

from __future__ import annotations

import datetime
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .harness import BackendFactory, Certs, TunnelFactory, TunnelProcess, echo_handler, wait_until

pytestmark = pytest.mark.timeout(90)

VERSIONS = ["1.2", "1.3"]


Leaf = tuple[Path, Path]  # certificate file, key file


@dataclass(frozen=True)
class Clients:
    ca: trustme.CA
    ca_file: Path
    alice: Leaf  # CN alice, DNS alice.example, URI spiffe://test/alice
    bob: Leaf  # CN bob, DNS bob.example
    mallory: Leaf  # CN alice, but from another CA
    directory: Path


def issue(ca: trustme.CA, directory: Path, cn: str, dns: str, uri: str | None = None) -> Leaf:
    """A client certificate signed by ``ca`` (trustme itself has no URI SANs)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(dns)]
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / f"{cn}-{dns}.crt", directory / f"{cn}-{dns}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Clients:
    directory = tmp_path_factory.mktemp("clients")
    ca = trustme.CA()
    ca_file = directory / "client-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    alice = issue(ca, directory, "alice", "alice.example", "spiffe://test/alice")
    bob = issue(ca, directory, "bob", "bob.example")
    mallory = issue(trustme.CA(), directory, "alice", "mallory.example")
    return Clients(ca, ca_file, alice, bob, mallory, directory)


def connect(tunnel: TunnelProcess, certs: Certs, version: str, leaf: Leaf | None) -> bytes:
    """Echo round trip presenting ``leaf``; raises ssl.SSLError/OSError when refused."""
    ctx = certs.client_context(version)
    if leaf is not None:
        ctx.load_cert_chain(*leaf)
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"ping")
        return sock.recv(4)  # TLS 1.3: a refused client certificate shows up here


def refused(
    tunnel: TunnelProcess, certs: Certs, version: str, leaf: trustme.LeafCert | None
) -> str:
    with pytest.raises((ssl.SSLError, OSError)) as info:
        data = connect(tunnel, certs, version, leaf)
        if not data:
            raise ConnectionResetError("closed")
    return str(info.value)


def start(
    start_tunnel: TunnelFactory, start_backend: BackendFactory, clients: Clients, **keys: str
) -> TunnelProcess:
    backend = start_backend(echo_handler)
    return start_tunnel(backend.address, client_ca=str(clients.ca_file), **keys)


@pytest.mark.parametrize("version", VERSIONS)
def test_verify_required(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    tunnel = start(start_tunnel, start_backend, clients, verify="required")
    assert connect(tunnel, certs, version, clients.alice) == b"ping"
    assert connect(tunnel, certs, version, clients.bob) == b"ping"
    refused(tunnel, certs, version, None)
    assert "UNKNOWN_CA" in refused(tunnel, certs, version, clients.mallory).upper()
    wait_until(lambda: len(tunnel.conn_lines()) >= 4, what="4 log lines")
    lines = tunnel.conn_lines()
    assert " client=alice " in lines[0]
    assert " client=bob " in lines[1]
    assert any("unable to get local issuer" in line or "unknown ca" in line for line in lines)


@pytest.mark.parametrize("version", VERSIONS)
def test_allow_lists_refuse_with_an_alert(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    tunnel = start(
        start_tunnel,
        start_backend,
        clients,
        verify="required",
        allow_cn="carol",
        allow_uri="spiffe://test/alice",
    )
    assert connect(tunnel, certs, version, clients.alice) == b"ping"  # by URI SAN
    message = refused(tunnel, certs, version, clients.bob)
    assert "BAD_CERTIFICATE" in message.upper()
    wait_until(
        lambda: any("not allowed (CN=bob" in line for line in tunnel.conn_lines()),
        what="the rejection logged with its reason",
    )


def test_allow_dns(
    certs: Certs, clients: Clients, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    tunnel = start(start_tunnel, start_backend, clients, verify="required", allow_dns="BOB.example")
    assert connect(tunnel, certs, "1.3", clients.bob) == b"ping"
    refused(tunnel, certs, "1.3", clients.alice)


@pytest.mark.parametrize("version", VERSIONS)
def test_verify_optional(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    tunnel = start(start_tunnel, start_backend, clients, verify="optional")
    assert connect(tunnel, certs, version, None) == b"ping"
    assert connect(tunnel, certs, version, clients.alice) == b"ping"
    refused(tunnel, certs, version, clients.mallory)
    wait_until(lambda: len(tunnel.conn_lines()) >= 3, what="3 log lines")
    assert " client=- " in tunnel.conn_lines()[0]
    assert " client=alice " in tunnel.conn_lines()[1]


def test_every_client_ca_is_trusted(
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """``client_ca`` with several files trusts the CAs of all of them, not only the first."""
    other = trustme.CA()
    other_file = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_file))
    dave = issue(other, tmp_path, "dave", "dave.example")
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address, client_ca=f"{clients.ca_file}, {other_file}", verify="required"
    )
    assert connect(tunnel, certs, "1.3", clients.alice) == b"ping"
    assert connect(tunnel, certs, "1.3", dave) == b"ping"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_refused_client_shows_no_cipher_without_a_version(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """A handshake that fails after the ServerHello has a cipher but no version: the log
    line shows neither rather than ``tls=-`` next to a cipher."""
    tunnel = start(start_tunnel, start_backend, clients, verify="required")
    refused(tunnel, certs, version, None)
    line = wait_until(lambda: next(iter(tunnel.conn_lines()), None), what="the log line")
    assert " tls=- cipher=- " in line, line
    assert 'reason="handshake failed: ' in line


def write_crl(clients: Clients, revoked: Leaf, path: Path) -> Path:
    ca_cert = x509.load_pem_x509_certificate(clients.ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(clients.ca.private_key_pem.bytes(), None)
    leaf = x509.load_pem_x509_certificate(revoked[0].read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(leaf.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=1))
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("version", VERSIONS)
def test_crl_revokes(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    crl = write_crl(clients, clients.bob, tmp_path / "revoked.crl.pem")
    tunnel = start(start_tunnel, start_backend, clients, verify="required", crl=str(crl))
    assert connect(tunnel, certs, version, clients.alice) == b"ping"
    assert "REVOKED" in refused(tunnel, certs, version, clients.bob).upper()
    wait_until(
        lambda: any("certificate revoked" in line for line in tunnel.conn_lines()),
        what="revocation logged",
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_s_client_cert(
    version: str,
    certs: Certs,
    clients: Clients,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    def greet(record):  # type: ignore[no-untyped-def]
        record.sock.sendall(b"welcome\n")
        record.sock.shutdown(socket.SHUT_WR)  # s_client exits on the close_notify
        record.read_to_end()

    backend = start_backend(greet)
    tunnel = start_tunnel(
        backend.address, client_ca=str(clients.ca_file), verify="required", allow_cn="alice"
    )
    host, port = tunnel.address
    flag = f"-tls1_{version.split('.')[1]}"
    for name, leaf in (("alice", clients.alice), ("bob", clients.bob)):
        cert, key = leaf
        result = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"{host}:{port}",
                flag,
                "-quiet",
                "-cert",
                str(cert),
                "-key",
                str(key),
            ],
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
        if name == "alice":
            assert result.stdout == b"welcome\n", result.stderr
        else:
            assert b"bad certificate" in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_cert(
    certs: Certs, clients: Clients, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    def http(record):  # type: ignore[no-untyped-def]
        record.sock.recv(65536)
        record.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        record.sock.shutdown(socket.SHUT_WR)

    backend = start_backend(http)
    tunnel = start_tunnel(
        backend.address, client_ca=str(clients.ca_file), verify="required", allow_cn="alice"
    )
    cert, key = clients.alice
    url = f"https://127.0.0.1:{tunnel.address[1]}/"
    base = ["curl", "-sk", "--http1.1", url]
    ok = subprocess.run(
        [*base, "--cert", str(cert), "--key", str(key)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ok.stdout == b"ok", ok.stderr
    denied = subprocess.run(base, capture_output=True, timeout=30, check=False)
    assert denied.returncode != 0


def test_proxy_v2_carries_the_client_certificate(
    certs: Certs, clients: Clients, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The SSL TLV says a certificate came with this connection and names its CN; the DER
    goes in the configured TLV type."""
    from tunnel.wire import proxy_protocol as pp

    from .harness import ConnRecord

    def recorder(record: ConnRecord) -> None:
        record.read_to_end()
        record.sock.shutdown(socket.SHUT_WR)  # both directions end: the log line follows

    backend = start_backend(recorder)
    tunnel = start_tunnel(
        backend.address,
        client_ca=str(clients.ca_file),
        verify="required",
        proxy_protocol="v2",
        proxy_cert_tlv="0xE0",
    )
    ctx = certs.client_context("1.3")
    ctx.load_cert_chain(*clients.alice)
    with tunnel.connect(ctx) as sock:
        sock.sendall(b"payload")
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"payload"), what="payload at the backend")
    decoder = pp.ProxyDecoder(max_size=8192)
    header = decoder.feed(bytes(record.received))
    assert isinstance(header, pp.ProxyHeader)
    info = header.ssl_info()
    assert info is not None and info.cert_conn and info.verify == 0
    assert info.cn == "alice"
    der = x509.load_pem_x509_certificate(clients.alice[0].read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert header.tlv(0xE0) == der
    wait_until(lambda: tunnel.conn_lines(), what="summary line")
    assert " client=alice " in tunnel.conn_lines()[0]
