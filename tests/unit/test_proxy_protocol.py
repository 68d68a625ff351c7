"""Tests for tunnel.proxy_protocol, with expectations built from proxy-protocol.txt."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunnel.wire.proxy_protocol import (
    NEED_DATA,
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    ProxyDecoder,
    ProxyHeader,
    ProxyProtocolError,
    crc32c,
    decode,
    encode_v1,
    encode_v2,
    ssl_tlv,
)

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # spec section 2.2
HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _crc32c_bitwise(data: bytes) -> int:
    """Independent bit-at-a-time CRC-32C (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return SIG + bytes((ver_cmd, fam)) + n.to_bytes(2, "big") + body


TCP4_BODY = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + (56324).to_bytes(2, "big") + b"\x01\xbb"


def feed_bytewise(data: bytes, decoder: ProxyDecoder | None = None) -> ProxyHeader:
    d = decoder or ProxyDecoder()
    for i in range(len(data)):
        result = d.feed(data[i : i + 1])
        if result is not NEED_DATA:
            return result
        assert d.buffered <= d.max_size
    raise AssertionError("header never completed")


# ------------------------------------------------------------------ CRC32C


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector


@given(st.binary(max_size=300))
@HYP
def test_crc32c_matches_bitwise(data: bytes) -> None:
    assert crc32c(data) == _crc32c_bitwise(data)


# ------------------------------------------------------------------ v1 encode


def test_encode_v1_spec_examples() -> None:
    assert (
        encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )
    assert encode_v1(("2001:db8::1", 1), ("2001:db8::2", 65535)) == (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    )
    assert encode_v1(None, ("1.2.3.4", 1)) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(("1.2.3.4", 1), None) == b"PROXY UNKNOWN\r\n"
    assert encode_v1("/run/a.sock", "/run/b.sock") == b"PROXY UNKNOWN\r\n"


def test_encode_v1_mapped_mixed_scoped_and_peername() -> None:
    assert encode_v1(("::ffff:10.0.0.1", 5), ("::ffff:10.0.0.2", 6)) == (
        b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n"
    )
    mixed = encode_v1(("10.0.0.1", 5), ("::1", 6))
    assert mixed.startswith(b"PROXY TCP6 ")
    assert decode(mixed)[0].src_addr == str(ipaddress.IPv6Address("::ffff:10.0.0.1"))
    # asyncio IPv6 peername (host, port, flowinfo, scope_id); the scope is not sent
    assert encode_v1(("fe80::1%eth0", 7, 0, 2), ("fe80::2", 8)) == (
        b"PROXY TCP6 fe80::1 fe80::2 7 8\r\n"
    )


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("1.2.3.4", 65536), ("1.2.3.4", 1)),
        (("1.2.3.4", -1), ("1.2.3.4", 1)),
        (("not-an-ip", 1), ("1.2.3.4", 1)),
        (("1.2.3.4", "80"), ("1.2.3.4", 1)),
    ],
)
def test_encode_rejects_bad_endpoints(src: object, dst: object) -> None:
    with pytest.raises(ValueError):
        encode_v1(src, dst)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_v2(src, dst)  # type: ignore[arg-type]


# ------------------------------------------------------------------ v2 encode


def test_encode_v2_tcp4_exact() -> None:
    out = encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert out == SIG + b"\x21\x11\x00\x0c" + TCP4_BODY
    assert len(out) == 28


def test_encode_v2_tcp6_exact() -> None:
    out = encode_v2(("2001:db8::1", 1), ("::ffff:1.2.3.4", 2))  # mixed -> IPv6
    src = ipaddress.IPv6Address("2001:db8::1").packed
    dst = bytes(10) + b"\xff\xff\x01\x02\x03\x04"
    assert out == SIG + b"\x21\x21\x00\x24" + src + dst + b"\x00\x01\x00\x02"


def test_encode_v2_mapped_pair_is_tcp4() -> None:
    out = encode_v2(("::ffff:192.168.0.1", 56324), ("::ffff:192.168.0.11", 443))
    assert out == SIG + b"\x21\x11\x00\x0c" + TCP4_BODY


def test_encode_v2_unix_exact() -> None:
    out = encode_v2("/run/src.sock", "/run/dst.sock")
    src = b"/run/src.sock".ljust(108, b"\0")
    dst = b"/run/dst.sock".ljust(108, b"\0")
    assert out == SIG + b"\x21\x31\x00\xd8" + src + dst
    header, rest = decode(out)
    assert (header.family, header.src_addr, header.dst_addr) == (
        "UNIX",
        "/run/src.sock",
        "/run/dst.sock",
    )
    assert header.src_port is None and rest == b""


def test_encode_v2_unix_full_length_and_abstract() -> None:
    long_path = "/" + "p" * 107
    header, _ = decode(encode_v2(long_path, "\0abstract"))
    assert header.src_addr == long_path
    assert header.dst_addr == "\0abstract"


def test_encode_v2_local_and_unspec() -> None:
    assert encode_v2(None, None, command="LOCAL") == SIG + b"\x20\x00\x00\x00"
    assert encode_v2(None, None) == SIG + b"\x21\x00\x00\x00"
    assert encode_v2(None, None, [(PP2_TYPE_NOOP, b"")], command="LOCAL") == (
        SIG + b"\x20\x00\x00\x03" + b"\x04\x00\x00"
    )


def test_encode_v2_tlv_layout() -> None:
    out = encode_v2(
        ("192.168.0.1", 56324),
        ("192.168.0.11", 443),
        [(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"example.com")],
    )
    tlvs = b"\x01\x00\x02h2" + b"\x02\x00\x0bexample.com"
    assert out == SIG + b"\x21\x11" + (12 + len(tlvs)).to_bytes(2, "big") + TCP4_BODY + tlvs


def test_encode_v2_crc32c_exact() -> None:
    out = encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443), crc32c=True)
    assert out[:16] == SIG + b"\x21\x11\x00\x13"
    assert out[16:28] == TCP4_BODY
    assert out[28:31] == b"\x03\x00\x04"
    # spec: checksum over the whole header with the checksum field set to zero
    assert int.from_bytes(out[31:35], "big") == _crc32c_bitwise(out[:31] + bytes(4))
    header, _ = decode(out)
    assert header.tlv(PP2_TYPE_CRC32C) == out[31:35]


def test_ssl_tlv_layout_and_info() -> None:
    type_, value = ssl_tlv(
        client_flags=PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN,
        verify=0,
        version="TLSv1.3",
        cn="Zoë",
        cipher="TLS_AES_128_GCM_SHA256",
        sig_alg="RSA-SHA256",
        key_alg="RSA2048",
    )
    assert type_ == PP2_TYPE_SSL == 0x20
    assert value[:5] == b"\x03\x00\x00\x00\x00"
    assert value[5:15] == b"\x21\x00\x07TLSv1.3"
    assert value[15:22] == b"\x22\x00\x04Zo\xc3\xab"
    assert ssl_tlv(client_flags=0, verify=7) == (0x20, b"\x00\x00\x00\x00\x07")
    header, _ = decode(encode_v2(("1.2.3.4", 1), ("1.2.3.5", 2), [(type_, value)]))
    info = header.ssl_info()
    assert info is not None
    assert (info.ssl, info.cert_conn, info.cert_sess) == (True, True, False)
    assert (info.version, info.cn, info.cipher) == ("TLSv1.3", "Zoë", "TLS_AES_128_GCM_SHA256")
    assert (info.sig_alg, info.key_alg, info.verify) == ("RSA-SHA256", "RSA2048", 0)
    assert len(info.sub_tlvs) == 5
    assert ProxyHeader(2, "PROXY", "UNKNOWN").ssl_info() is None
    local = ProxyHeader(2, "LOCAL", "UNKNOWN", tlvs=(ssl_tlv(client_flags=4, verify=1),))
    sess = local.ssl_info()
    assert sess is not None and sess.cert_sess and not sess.ssl and sess.verify == 1
    assert PP2_CLIENT_CERT_SESS == 4
    with pytest.raises(ValueError):
        ssl_tlv(client_flags=256, verify=0)
    with pytest.raises(ValueError):
        ssl_tlv(client_flags=0, verify=1 << 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"src": "/a", "dst": ("1.2.3.4", 1)}, "mix"),
        ({"src": ("1.2.3.4", 1), "dst": None, "command": "LOCAL"}, "LOCAL"),
        ({"src": None, "dst": None, "command": "BOGUS"}, "command"),
        ({"src": None, "dst": None, "tlvs": [(PP2_TYPE_CRC32C, bytes(4))]}, "crc32c=True"),
        ({"src": None, "dst": None, "tlvs": [(256, b"")]}, "type"),
        ({"src": None, "dst": None, "tlvs": [(1, bytes(65536))]}, "65535"),
        ({"src": None, "dst": None, "tlvs": [(1, bytes(40000))] * 2}, "65535"),
        ({"src": "/" + "x" * 108, "dst": "/b"}, "longer"),
        ({"src": "/a\0b", "dst": "/b"}, "NUL"),
    ],
)
def test_encode_v2_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_v2(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ decode: good input

V1_CASES = [
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(1, "PROXY", "TCP4", "192.168.0.1", 56324, "192.168.0.11", 443),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyHeader(1, "PROXY", "TCP4", "255.255.255.255", 65535, "255.255.255.255", 65535),
    ),
    (
        b"PROXY TCP6 ffff::1 FFFF:0:0:0:0:0:0:2 0 65535\r\n",
        ProxyHeader(1, "PROXY", "TCP6", "ffff::1", 0, "ffff::2", 65535),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "PROXY", "UNKNOWN")),
    (
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        ProxyHeader(1, "PROXY", "UNKNOWN"),
    ),
]


@pytest.mark.parametrize(("wire", "expected"), V1_CASES)
def test_decode_v1(wire: bytes, expected: ProxyHeader) -> None:
    assert decode(wire) == (expected, b"")
    assert feed_bytewise(wire) == expected
    decoder = ProxyDecoder()
    assert decoder.feed(wire + b"\x16\x03\x01payload") == expected
    assert decoder.rest == b"\x16\x03\x01payload"
    assert decoder.header == expected
    assert decoder.buffered == 0


def test_decode_v1_exactly_107_bytes() -> None:
    line = b"PROXY UNKNOWN " + b"f" * (107 - 16) + b"\r\n"
    assert len(line) == 107
    assert decode(line)[0].family == "UNKNOWN"
    with pytest.raises(ProxyProtocolError, match="longer than 107 bytes"):
        decode(line[:-2] + b"f\r\n")


def test_decode_v2_tcp4_with_trailing_and_bytewise() -> None:
    wire = SIG + b"\x21\x11\x00\x0c" + TCP4_BODY
    expected = ProxyHeader(2, "PROXY", "TCP4", "192.168.0.1", 56324, "192.168.0.11", 443)
    assert decode(wire + b"hello") == (expected, b"hello")
    decoder = ProxyDecoder()
    assert feed_bytewise(wire, decoder) == expected
    assert decoder.rest == b""


def test_decode_v2_local_ignores_addresses_keeps_tlvs() -> None:
    wire = v2(0x20, 0x11, TCP4_BODY + b"\x04\x00\x01\x00")
    assert decode(wire)[0] == ProxyHeader(2, "LOCAL", "UNKNOWN", tlvs=((PP2_TYPE_NOOP, b"\0"),))
    assert decode(v2(0x20, 0x12, TCP4_BODY))[0].command == "LOCAL"  # LOCAL ignores family


def test_decode_v2_unspec_with_tlvs() -> None:
    wire = encode_v2(None, None, [(PP2_TYPE_UNIQUE_ID, b"id-1")], crc32c=True)
    header, _ = decode(wire)
    assert (header.family, header.command, header.src_addr) == ("UNKNOWN", "PROXY", None)
    assert header.tlv(PP2_TYPE_UNIQUE_ID) == b"id-1"
    assert header.tlv(PP2_TYPE_ALPN) is None


# ------------------------------------------------------------------ decode: errors


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "not a PROXY protocol header"),
        (b"PROXX", "not a PROXY protocol header"),
        (b"\r\n\r\n\x01", "not a PROXY protocol header"),
        (b"PROXY TCP4 " + b"1" * 200, "longer than 107 bytes"),
        (b"PROXY UNKNOWN" + b" " * 100, "longer than 107 bytes"),
        (b"PROXY UNKNOWN\n", "bare LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
        (b"PROXY UNKNOWN\rX", "CR not followed by LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR not followed by LF"),
        (b"PROXY TCP5 ", "protocol must be"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol must be"),
        (b"PROXY \r\n", "protocol must be"),
        (b"PROXY UNKNOWNX\r\n", "protocol must be"),
        (b"PROXY TCP4\r\n", "protocol must be"),
        (b"PROXY TCP4 \r\n", "single spaces"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "invalid TCP4 source address"),
        (b"PROXY TCP4 1.2.3.4 05.6.7.8 1 2\r\n", "invalid TCP4 destination address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "invalid TCP4 source address"),
        (b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n", "invalid TCP4 source address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid TCP6 source address"),
        (b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", "invalid TCP6 destination address"),
        (b"PROXY TCP6 ::1 gggg::1 1 2\r\n", "invalid TCP6 destination address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0443\r\n", "invalid destination port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "invalid source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999999\r\n", "invalid destination port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "invalid source port"),
        (v2(0x11, 0x11, TCP4_BODY), "unsupported version 1"),
        (v2(0x31, 0x11, TCP4_BODY), "unsupported version 3"),
        (v2(0x22, 0x11, TCP4_BODY), "unknown command 0x2"),
        (v2(0x2F, 0x11, TCP4_BODY), "unknown command 0xf"),
        (v2(0x21, 0x13, TCP4_BODY), "invalid family/protocol byte 0x13"),
        (v2(0x21, 0x10, TCP4_BODY), "invalid family/protocol byte 0x10"),
        (v2(0x21, 0x01, b""), "invalid family/protocol byte 0x01"),
        (v2(0x21, 0x41, TCP4_BODY), "invalid family/protocol byte 0x41"),
        (v2(0x20, 0x13, TCP4_BODY), "invalid family/protocol byte 0x13"),
        (v2(0x21, 0x12, TCP4_BODY), "datagram"),
        (v2(0x21, 0x32, bytes(216)), "datagram"),
        (v2(0x21, 0x11, TCP4_BODY[:11]), "too short for TCP4"),
        (v2(0x21, 0x21, TCP4_BODY), "too short for TCP6"),
        (v2(0x21, 0x31, bytes(215)), "too short for UNIX"),
        (v2(0x20, 0x11, b""), "too short for TCP4"),
        (v2(0x21, 0x11, b"", length=4097), "exceeds limit of 4096"),
        (v2(0x21, 0x11, TCP4_BODY + b"\x01"), "1 trailing byte"),
        (v2(0x21, 0x11, TCP4_BODY + b"\x01\x00"), "2 trailing byte"),
        (v2(0x21, 0x11, TCP4_BODY + b"\x01\x00\x05abc"), "declares 5 bytes, only 3 left"),
        (v2(0x21, 0x00, b"\x03\x00\x03abc"), "CRC32C TLV must appear once"),
        (v2(0x21, 0x00, b"\x03\x00\x04abcd"), "CRC32C checksum mismatch"),
        (v2(0x21, 0x00, b"\x20\x00\x04abcd"), "PP2_TYPE_SSL TLV is 4 bytes"),
        (v2(0x21, 0x00, b"\x20\x00\x07" + bytes(5) + b"\x21\x00"), "PP2_TYPE_SSL: 2 trailing"),
        (v2(0x21, 0x00, b"\x20\x00\x08" + bytes(5) + b"\x21\x00\x01"), "PP2_TYPE_SSL: TLV 0x21"),
    ],
)
def test_decode_errors(wire: bytes, match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match) as excinfo:
        decode(wire + b"\r\n" * 60)  # trailing bytes must not rescue a bad header
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(ProxyProtocolError, match=match):
        decoder = ProxyDecoder()  # same verdict when fed byte by byte
        for i in range(len(wire)):
            decoder.feed(wire[i : i + 1])
        decoder.feed(b"\r\n" * 60)


def test_decode_crc32c_twice_rejected() -> None:
    good = encode_v2(None, None, crc32c=True)
    wire = v2(0x21, 0x00, good[16:] * 2)
    with pytest.raises(ProxyProtocolError, match="once"):
        decode(wire)


def test_crc32c_detects_corruption() -> None:
    wire = bytearray(encode_v2(("10.0.0.1", 1), ("10.0.0.2", 2), crc32c=True))
    wire[17] ^= 0x01  # flip a bit of the source address
    with pytest.raises(ProxyProtocolError, match="mismatch"):
        decode(bytes(wire))


def test_fail_fast_on_garbage() -> None:
    for garbage in (b"G", b"\x16", b"PROXZ", b"\r\n\r\n\x00\r\nQUIX", b"PROXY X"):
        decoder = ProxyDecoder()
        with pytest.raises(ProxyProtocolError):
            for i in range(len(garbage)):
                decoder.feed(garbage[i : i + 1])


def test_v2_length_rejected_before_body_arrives() -> None:
    decoder = ProxyDecoder(max_size=300)
    with pytest.raises(ProxyProtocolError, match="exceeds limit of 284"):
        decoder.feed(v2(0x21, 0x11, b"", length=285))
    decoder = ProxyDecoder(max_size=300)
    assert decoder.feed(v2(0x21, 0x11, b"", length=284)) is NEED_DATA
    assert decoder.feed(TCP4_BODY + b"\x04\x01\x0d" + bytes(268)) is NEED_DATA
    assert decoder.buffered == 299
    header = decoder.feed(b"\x00TLS")
    assert header is not NEED_DATA and header.tlv(PP2_TYPE_NOOP) == bytes(269)
    assert decoder.rest == b"TLS"


def test_errors_are_sticky_and_feed_after_done_is_misuse() -> None:
    decoder = ProxyDecoder()
    with pytest.raises(ProxyProtocolError):
        decoder.feed(b"nope")
    with pytest.raises(ProxyProtocolError, match="not a PROXY"):
        decoder.feed(b"PROXY UNKNOWN\r\n")
    decoder = ProxyDecoder()
    decoder.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def test_incomplete_and_misc() -> None:
    with pytest.raises(ProxyProtocolError, match="incomplete"):
        decode(b"PROXY TCP4 1.2.3.4")
    decoder = ProxyDecoder()
    assert decoder.feed(b"") is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"
    for bad in (100, 1 << 20):
        with pytest.raises(ValueError):
            ProxyDecoder(max_size=bad)


# ------------------------------------------------------------------ properties

ports = st.integers(0, 65535)
ip4 = st.ip_addresses(v=4).map(str)
ip6 = st.ip_addresses(v=6).map(str)
inet = st.tuples(st.one_of(ip4, ip6), ports)
tlv_types = st.integers(0, 255).filter(lambda t: t not in (PP2_TYPE_CRC32C, PP2_TYPE_SSL))
tlv_lists = st.lists(st.tuples(tlv_types, st.binary(max_size=40)), max_size=6)
unix_paths = st.text(
    st.characters(exclude_characters="\0", exclude_categories=("Cs",)),
    min_size=1,
    max_size=60,
).filter(lambda p: len(p.encode()) <= 108)
trailing = st.binary(max_size=30)


def _expected_inet(src: tuple[str, int], dst: tuple[str, int]) -> tuple[str, str, str]:
    a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])

    def v4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
        return ip if isinstance(ip, ipaddress.IPv4Address) else ip.ipv4_mapped

    a4, b4 = v4(a), v4(b)
    if a4 is not None and b4 is not None:
        return "TCP4", str(a4), str(b4)
    six = [ip if ip.version == 6 else ipaddress.IPv6Address(f"::ffff:{ip}") for ip in (a, b)]
    return "TCP6", str(six[0]), str(six[1])


def _split_feed(data: bytes, cuts: list[int]) -> tuple[ProxyHeader, bytes]:
    decoder = ProxyDecoder()
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(points):
        result = decoder.feed(data[start:end])
        if result is not NEED_DATA:
            return result, decoder.rest + data[end:]
        assert decoder.buffered <= decoder.max_size
    raise AssertionError("header never completed")


@given(inet, inet, trailing, st.lists(st.integers(0, 200), max_size=8))
@HYP
def test_v1_round_trip(
    src: tuple[str, int], dst: tuple[str, int], tail: bytes, cuts: list[int]
) -> None:
    wire = encode_v1(src, dst)
    assert len(wire) <= 107
    family, sa, da = _expected_inet(src, dst)
    expected = ProxyHeader(1, "PROXY", family, sa, src[1], da, dst[1])  # type: ignore[arg-type]
    assert _split_feed(wire + tail, cuts) == (expected, tail)


@given(inet, inet, tlv_lists, st.booleans(), trailing, st.lists(st.integers(0, 400), max_size=8))
@HYP
def test_v2_inet_round_trip(
    src: tuple[str, int],
    dst: tuple[str, int],
    tlvs: list[tuple[int, bytes]],
    with_crc: bool,
    tail: bytes,
    cuts: list[int],
) -> None:
    wire = encode_v2(src, dst, tlvs, crc32c=with_crc)
    header, rest = _split_feed(wire + tail, cuts)
    family, sa, da = _expected_inet(src, dst)
    assert (header.version, header.command, header.family) == (2, "PROXY", family)
    assert (header.src_addr, header.src_port, header.dst_addr, header.dst_port) == (
        sa,
        src[1],
        da,
        dst[1],
    )
    got = [t for t in header.tlvs if t[0] != PP2_TYPE_CRC32C]
    assert got == tlvs
    assert (header.tlv(PP2_TYPE_CRC32C) is not None) == with_crc
    assert rest == tail


@given(unix_paths, unix_paths, tlv_lists, st.booleans(), trailing)
@HYP
def test_v2_unix_round_trip(
    src: str, dst: str, tlvs: list[tuple[int, bytes]], with_crc: bool, tail: bytes
) -> None:
    header, rest = decode(encode_v2(src, dst, tlvs, crc32c=with_crc) + tail)
    assert (header.family, header.src_addr, header.dst_addr) == ("UNIX", src, dst)
    assert [t for t in header.tlvs if t[0] != PP2_TYPE_CRC32C] == tlvs
    assert rest == tail


@given(
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    *[st.none() | st.text(max_size=30) for _ in range(5)],
)
@HYP
def test_ssl_tlv_round_trip(
    flags: int,
    verify: int,
    version: str | None,
    cn: str | None,
    cipher: str | None,
    sig_alg: str | None,
    key_alg: str | None,
) -> None:
    tlv = ssl_tlv(
        client_flags=flags,
        verify=verify,
        version=version,
        cn=cn,
        cipher=cipher,
        sig_alg=sig_alg,
        key_alg=key_alg,
    )
    header, _ = decode(encode_v2(None, None, [tlv], command="LOCAL"))
    info = header.ssl_info()
    assert info is not None
    assert (info.client_flags, info.verify) == (flags, verify)
    assert (info.version, info.cn, info.cipher) == (version, cn, cipher)
    assert (info.sig_alg, info.key_alg) == (sig_alg, key_alg)


def _fuzz(data: bytes, chunk: int, max_size: int = 4096 + 16) -> None:
    decoder = ProxyDecoder(max_size)
    try:
        for i in range(0, len(data), chunk):
            if decoder.feed(data[i : i + chunk]) is not NEED_DATA:
                return
            assert decoder.buffered <= max_size
    except ProxyProtocolError:
        return


@given(st.binary(max_size=300), st.integers(1, 64))
@HYP
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    _fuzz(data, chunk)


@given(
    st.sampled_from([b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", SIG]),
    st.binary(max_size=300),
    st.integers(1, 64),
)
@HYP
def test_fuzz_after_signature(prefix: bytes, data: bytes, chunk: int) -> None:
    _fuzz(prefix + data, chunk)


@given(
    st.sampled_from(
        [
            encode_v1(("1.2.3.4", 1), ("5.6.7.8", 2)),
            encode_v1(("::1", 1), ("::2", 2)),
            encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), [ssl_tlv(client_flags=1, verify=0, cn="a")]),
            encode_v2(("::1", 1), ("::2", 2), [(1, b"h2")], crc32c=True),
            encode_v2("/a", "/b", [(PP2_TYPE_NOOP, b"xyz")]),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(1, 64),
    st.sampled_from([232, 300, 4112]),
)
@HYP
def test_fuzz_mutated_headers(
    wire: bytes, edits: list[tuple[int, int]], chunk: int, max_size: int
) -> None:
    data = bytearray(wire)
    for pos, value in edits:
        data[pos % len(data)] = value
    assume(bytes(data) != wire)
    _fuzz(bytes(data) + b"rest", chunk, max_size)
