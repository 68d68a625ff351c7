"""Unit tests for tunnel.identity (allow-lists) and tunnel.tickets (key file format)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from tunnel.tls.identity import AllowLists, ClientIdentity, identity_from_der, rejection
from tunnel.tls.tickets import KEY_SIZE, TicketKeyError, parse_keys

ALICE = ClientIdentity("alice", ("alice.example",), ("spiffe://test/alice",))


@pytest.mark.parametrize(
    ("allow", "ok"),
    [
        (AllowLists(), True),
        (AllowLists(cn=frozenset({"alice"})), True),
        (AllowLists(cn=frozenset({"bob"})), False),
        (AllowLists(cn=frozenset({"bob"}), dns=frozenset({"alice.example"})), True),
        (AllowLists(uri=frozenset({"spiffe://test/alice"})), True),
        (AllowLists(uri=frozenset({"spiffe://test/bob"})), False),
    ],
)
def test_rejection(allow: AllowLists, ok: bool) -> None:
    reason = rejection(ALICE, allow)
    assert (reason is None) == ok
    if reason is not None:
        assert "CN=alice" in reason
        assert "URI:spiffe://test/alice" in reason


def test_no_cn_is_rejected_by_cn_list() -> None:
    assert rejection(ClientIdentity(None), AllowLists(cn=frozenset({"alice"}))) is not None


def test_identity_from_der() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("Alice.Example"), x509.UniformResourceIdentifier("spiffe://test/alice")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    assert identity_from_der(cert.public_bytes(serialization.Encoding.DER)) == ALICE
    with pytest.raises(ValueError):
        identity_from_der(b"not a certificate")


def test_parse_keys() -> None:
    data = bytes(range(80)) + bytes(range(100, 180))
    keys = parse_keys(data)
    assert keys[0] == (bytes(range(16)), bytes(range(16, 48)), bytes(range(48, 80)))
    assert keys[1][0] == bytes(range(100, 116))


@given(st.binary(max_size=400))
def test_parse_keys_needs_whole_keys(data: bytes) -> None:
    if data and len(data) % KEY_SIZE == 0:
        assert len(parse_keys(data)) == len(data) // KEY_SIZE
    else:
        with pytest.raises(TicketKeyError, match="80"):
            parse_keys(data)
