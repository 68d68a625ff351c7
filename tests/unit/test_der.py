"""The DER reader that gives the supervisor certificate names and expiry without cryptography.

``cryptography`` is the reference: for every certificate built here, the reader must find
the same DNS names and the same notAfter. Malformed input of every kind (each truncation,
byte flips, garbage) must end in ``ValueError``, never another exception.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import random
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tunnel.tls import der

UTC = datetime.UTC
KEY = ec.generate_private_key(ec.SECP256R1())


def build(
    names: list[x509.GeneralName] | None,
    not_after: datetime.datetime,
    *,
    extra: list[x509.ExtensionType] = (),  # type: ignore[assignment]
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
    )
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(KEY, hashes.SHA256())


def reference(cert: x509.Certificate) -> der.Leaf:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return der.Leaf(names, cert.not_valid_after_utc)


MIXED = [
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.DNSName("Example.COM"),
    x509.UniformResourceIdentifier("spiffe://example/a"),
    x509.DNSName("*.example.net"),
    x509.RFC822Name("a@example.com"),
]

CASES = {
    "no SAN": build(None, datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)),
    "mixed SAN, UTCTime": build(MIXED, datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    "GeneralizedTime from 2050": build(
        [x509.DNSName("late.example")], datetime.datetime(2050, 1, 1, tzinfo=UTC)
    ),
    "SAN after other extensions": build(
        [x509.DNSName("a.example")],
        datetime.datetime(2030, 1, 1, tzinfo=UTC),
        extra=[
            x509.BasicConstraints(ca=False, path_length=None),
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    ),
    "many names (long lengths)": build(
        [x509.DNSName(f"host{i}.example.org") for i in range(300)],
        datetime.datetime(2032, 2, 29, 12, 0, 0, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_agrees_with_cryptography(name: str) -> None:
    cert = CASES[name]
    assert der.parse_certificate(cert.public_bytes(serialization.Encoding.DER)) == reference(cert)


def test_reads_the_leaf_of_a_trustme_chain_file_with_its_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "www.example.org", "127.0.0.1")
    path = tmp_path / "combined.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))  # key first, then the chain
    expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert der.read_leaf(str(path)) == reference(expected)
    assert der.read_leaf(str(path)).dns_names == ("localhost", "www.example.org")


def test_a_file_without_a_certificate_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="no PEM certificate"):
        der.read_leaf(str(path))
    broken = b"-----BEGIN CERTIFICATE-----\n!!notbase64!!\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError):
        der.first_pem_certificate(broken)


def test_every_truncation_is_a_value_error() -> None:
    data = CASES["mixed SAN, UTCTime"].public_bytes(serialization.Encoding.DER)
    for size in range(len(data)):
        with pytest.raises(ValueError):
            der.parse_certificate(data[:size])


def test_corrupted_bytes_never_raise_anything_but_value_error() -> None:
    data = CASES["SAN after other extensions"].public_bytes(serialization.Encoding.DER)
    rng = random.Random(12)
    for _ in range(3000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        with contextlib.suppress(ValueError):
            der.parse_certificate(bytes(mutated))
    for _ in range(500):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        with pytest.raises(ValueError):
            der.parse_certificate(b"\x30" + garbage)
