"""The PROXY header a connection sends its backend: built from plain values, decoded back."""

from __future__ import annotations

import ssl

import pytest
import trustme

from tunnel.tls.clients import client_cert
from tunnel.wire import proxy_protocol as pp
from tunnel.wire.proxy_out import ClientCert, ProxyOptions, TLSFacts, build_header

SRC = ("192.0.2.1", 40000)
DST = ("198.51.100.2", 443)
FACTS = TLSFacts(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", alpn="h2", sni="a.test")


def decode(data: bytes) -> pp.ProxyHeader:
    header, rest = pp.decode(data)
    assert rest == b""
    return header


def test_v1_is_the_plain_text_line() -> None:
    data = build_header(ProxyOptions("v1"), SRC, DST, FACTS)
    assert data == b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_unix_client_is_unknown(version: str) -> None:
    """A client that is not on TCP: UNKNOWN (v1) / AF_UNSPEC (v2), as the spec says."""
    data = build_header(ProxyOptions(version), None, DST, FACTS)
    header = decode(data)
    assert header.family == "UNKNOWN"
    assert header.src_addr is None
    if version == "v1":
        assert data == b"PROXY UNKNOWN\r\n"
    else:
        assert data[13] == 0x00  # AF_UNSPEC, UNSPEC
        assert header.tlv(pp.PP2_TYPE_AUTHORITY) == b"a.test"


def test_v2_without_client_cert() -> None:
    header = decode(build_header(ProxyOptions("v2"), SRC, DST, FACTS))
    assert (header.src_addr, header.src_port, header.dst_addr, header.dst_port) == (*SRC, *DST)
    assert header.tlv(pp.PP2_TYPE_ALPN) == b"h2"
    assert header.tlv(pp.PP2_TYPE_AUTHORITY) == b"a.test"
    assert header.tlv(pp.PP2_TYPE_UNIQUE_ID) is None
    assert header.tlv(pp.PP2_TYPE_CRC32C) is None
    info = header.ssl_info()
    assert info is not None
    assert info.client_flags == pp.PP2_CLIENT_SSL
    assert (info.version, info.cipher, info.cn, info.sig_alg) == (
        "TLSv1.3",
        "TLS_AES_128_GCM_SHA256",
        None,
        None,
    )


JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_tlv_only_when_configured() -> None:
    facts = TLSFacts(version="TLSv1.3", sni="a.test", ja4=JA4)
    header = decode(build_header(ProxyOptions("v2", ja4_tlv=0xE1), SRC, DST, facts))
    assert header.tlv(0xE1) == JA4.encode()
    assert header.ssl_info() is not None
    assert decode(build_header(ProxyOptions("v2"), SRC, DST, facts)).tlv(0xE1) is None


def test_passthrough_header_has_authority_and_no_ssl_tlv() -> None:
    facts = TLSFacts(sni="mail.test", ja4=JA4, terminated=False)
    header = decode(build_header(ProxyOptions("v2", ja4_tlv=0xE1), SRC, DST, facts))
    assert header.tlv(pp.PP2_TYPE_AUTHORITY) == b"mail.test"
    assert header.tlv(0xE1) == JA4.encode()
    assert header.ssl_info() is None and header.tlv(pp.PP2_TYPE_ALPN) is None


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def test_group_tlv_byte_by_byte() -> None:
    """The negotiated group in its custom TLV, after the SSL TLV: every byte of the header."""
    facts = TLSFacts(group="X25519MLKEM768")
    data = build_header(ProxyOptions("v2", group_tlv=0xE2), SRC, DST, facts)
    addresses = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + (40000).to_bytes(2, "big") + b"\x01\xbb"
    ssl_tlv = b"\x20\x00\x05" + b"\x01" + b"\x00\x00\x00\x00"  # PP2_CLIENT_SSL, verified
    group_tlv = b"\xe2\x00\x0e" + b"X25519MLKEM768"
    body = addresses + ssl_tlv + group_tlv
    assert data == V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body


def test_group_tlv_only_when_configured_and_known() -> None:
    facts = TLSFacts(version="TLSv1.3", ja4=JA4, group="P-521")
    options = ProxyOptions("v2", ja4_tlv=0xE1, group_tlv=0xE2)
    header = decode(build_header(options, SRC, DST, facts))
    assert (header.tlv(0xE1), header.tlv(0xE2)) == (JA4.encode(), b"P-521")
    assert decode(build_header(ProxyOptions("v2"), SRC, DST, facts)).tlv(0xE2) is None
    # No group known (a passed-through connection): no TLV rather than an empty one.
    unknown = TLSFacts(sni="mail.test", terminated=False)
    assert decode(build_header(options, SRC, DST, unknown)).tlv(0xE2) is None
    v1 = build_header(ProxyOptions("v1", group_tlv=0xE2), SRC, DST, facts)
    assert v1 == b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n"


def test_v2_all_options() -> None:
    cert = ClientCert(cn="alice", sig_alg="ecdsa-with-SHA256", key_alg="id-ecPublicKey", der=b"D")
    options = ProxyOptions("v2", crc32c=True, unique_id=True, cert_tlv=0xE0)
    data = build_header(options, SRC, DST, FACTS, cert=cert, unique_id=b"\x01" * 16)
    header = decode(data)  # the decoder verifies the CRC32C
    crc = header.tlv(pp.PP2_TYPE_CRC32C)
    assert crc is not None
    assert header.tlvs[-1][0] == pp.PP2_TYPE_CRC32C
    assert header.tlv(pp.PP2_TYPE_UNIQUE_ID) == b"\x01" * 16
    assert header.tlv(0xE0) == b"D"
    info = header.ssl_info()
    assert info is not None
    assert info.ssl and info.cert_conn and info.cert_sess
    assert info.verify == 0
    assert (info.cn, info.sig_alg, info.key_alg) == ("alice", "ecdsa-with-SHA256", "id-ecPublicKey")
    # Corrupting one byte of the header makes the checksum fail.
    broken = bytearray(data)
    broken[20] ^= 1
    with pytest.raises(pp.ProxyProtocolError):
        pp.decode(bytes(broken))


def test_resumed_session_certificate_is_session_only() -> None:
    header = decode(
        build_header(ProxyOptions("v2"), SRC, DST, FACTS, cert=ClientCert(this_connection=False))
    )
    info = header.ssl_info()
    assert info is not None
    assert info.cert_sess and not info.cert_conn


def test_der_certificate_only_when_configured() -> None:
    cert = ClientCert(cn="x", der=b"DER")
    header = decode(build_header(ProxyOptions("v2"), SRC, DST, FACTS, cert=cert))
    assert all(t < 0xE0 for t, _ in header.tlvs)


def test_balancer_tlvs_kept_only_when_asked_and_not_ours() -> None:
    balancer = ((pp.PP2_TYPE_AUTHORITY, b"lb.test"), (0xEA, b"vpc-1"), (pp.PP2_TYPE_NOOP, b""))
    plain = decode(build_header(ProxyOptions("v2"), SRC, DST, FACTS, balancer_tlvs=balancer))
    assert plain.tlv(0xEA) is None
    options = ProxyOptions("v2", keep_tlvs=True)
    kept = decode(build_header(options, SRC, DST, FACTS, balancer_tlvs=balancer))
    assert kept.tlv(0xEA) == b"vpc-1"
    assert kept.tlv(pp.PP2_TYPE_AUTHORITY) == b"a.test"  # ours wins
    assert kept.tlv(pp.PP2_TYPE_NOOP) is None
    assert [t for t, _ in kept.tlvs].count(pp.PP2_TYPE_AUTHORITY) == 1


# --------------------------------------------------------------------------- client_cert()


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLObject:
    """Run a handshake between two in-memory SSLObjects; return the server side."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server
    raise AssertionError("handshake did not complete")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _contexts(ca: trustme.CA, with_cert: bool) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    if with_cert:
        ca.issue_cert("alice@example.test", common_name="alice").configure_cert(client_ctx)
    return server_ctx, client_ctx


def test_client_cert_fields_from_a_real_handshake(ca: trustme.CA) -> None:
    server = _handshake(*_contexts(ca, with_cert=True))
    info = client_cert(server, der=True)
    assert info is not None
    assert info.cn == "alice"
    assert info.sig_alg == "ecdsa-with-SHA256"  # trustme signs with ECDSA P-256 / SHA-256
    assert info.key_alg == "id-ecPublicKey"
    assert info.verify == 0 and info.this_connection
    assert info.der == server.getpeercert(binary_form=True)
    assert client_cert(server, der=False).der is None  # type: ignore[union-attr]


def test_no_client_cert(ca: trustme.CA) -> None:
    server = _handshake(*_contexts(ca, with_cert=False))
    assert client_cert(server) is None
