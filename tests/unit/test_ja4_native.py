"""The compiled plane's JA4 (``_fastplane.ja4``, fp_ja4.c) against the reference in Python.

The compiled plane fingerprints ClientHellos in C; the Python plane parses them with
:mod:`tunnel.wire.clienthello` and :func:`tunnel.wire.ja4.ja4`. Both planes must log, route
and refuse on the same JA4, and agree on which hellos have none (Python's reader refuses
them): every case here compares ``native(message)`` with ``message_ja4(message)``, on real
hellos from OpenSSL, on generated ones with every extension JA4 reads well or badly formed,
and on mutations and truncations of both.
"""

from __future__ import annotations

import ssl

import pytest
from harness.hello import ext, openssl_first_flight, record_message, u16, vec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnel.wire.ja4 import message_ja4

fastplane = pytest.importorskip("tunnel.dataplane._fastplane")
native = fastplane.ja4

HYP = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]


def message(body: bytes) -> bytes:
    return b"\x01" + len(body).to_bytes(3, "big") + body


def agree(data: bytes) -> str | None:
    """Both answers, asserted equal; the answer."""
    expected = message_ja4(data)
    assert native(data) == expected, data.hex()
    return expected


REAL = [
    record_message(openssl_first_flight(name, alpn, version))
    for name in ("example.com", None)
    for alpn in (["h2", "http/1.1"], ["http/1.1"], ["x-~"], ["-h2"], None)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
]


@pytest.mark.parametrize("hello", REAL, ids=range(len(REAL)))
def test_real_hellos(hello: bytes) -> None:
    fingerprint = agree(hello)
    assert fingerprint is not None and fingerprint.startswith("t1")


def test_every_truncation_and_trailing_byte_of_a_real_hello() -> None:
    hello = REAL[0]
    for cut in range(len(hello) + 1):
        agree(hello[:cut])
    assert agree(hello + b"\x00") is None
    assert native(None) is None


def test_refusals_outside_the_body() -> None:
    assert agree(b"") is None
    assert agree(b"\x02" + REAL[0][1:]) is None  # not a ClientHello
    big = message(u16(0x0303) + bytes(32) + b"\x00" + vec(2, u16(0x1301) * 8190) + b"\x01\x00")
    assert len(big) - 4 > 16384 and agree(big) is None  # over the reader's limit
    assert agree(memoryview(REAL[1]).tobytes()) is not None
    with pytest.raises(TypeError):
        native("not bytes")


def test_largest_hello_within_the_limit() -> None:
    ciphers = [0x1301 + i for i in range(8100)]
    body = u16(0x0303) + bytes(32) + b"\x00" + vec(2, b"".join(map(u16, ciphers))) + b"\x01\x00"
    body += vec(2, ext(0x000D, vec(2, u16(0x0403) * 60)) + ext(0x002B, vec(1, u16(0x0304))))
    assert len(body) <= 16384
    fingerprint = agree(message(body))
    assert fingerprint is not None and fingerprint.startswith("t13i9902")


def u16_list(values: list[int]) -> bytes:
    return b"".join(map(u16, values))


codes = st.one_of(st.sampled_from(GREASE), st.integers(0, 0xFFFF), st.sampled_from([0x1301]))
code_lists = st.lists(codes, max_size=12)
names = st.binary(min_size=0, max_size=12)
hosts = st.binary(min_size=1, max_size=12).filter(lambda n: n.isascii() and b"\0" not in n)
protocols = st.binary(min_size=1, max_size=8)
KINDS = ["sni", "alpn", "sig", "groups", "versions", "other", "raw"]


def well_formed(draw: st.DrawFn, kind: str) -> bytes:
    """An extension Python's reader takes, of ``kind``."""
    if kind == "sni":
        return ext(0x0000, vec(2, b"\x00" + vec(2, draw(hosts))))
    if kind == "alpn":
        listed = draw(st.lists(protocols, min_size=1, max_size=3))
        return ext(0x0010, vec(2, b"".join(vec(1, p) for p in listed)))
    values = u16_list(draw(st.lists(codes, min_size=1, max_size=12)))
    if kind in ("sig", "groups"):
        return ext(0x000D if kind == "sig" else 0x000A, vec(2, values))
    if kind == "versions":
        return ext(0x002B, vec(1, values))
    kind_code = draw(codes.filter(lambda c: c not in (0x0000, 0x0010, 0x000D, 0x000A, 0x002B)))
    return ext(kind_code, draw(st.binary(max_size=6)))


def any_form(draw: st.DrawFn, kind: str) -> bytes:
    """An extension of ``kind`` that may be malformed anywhere."""
    if kind == "sni":
        entries = draw(st.lists(st.tuples(st.sampled_from([0, 0, 1]), names), max_size=3))
        return ext(0x0000, vec(2, b"".join(bytes([t]) + vec(2, n) for t, n in entries)))
    if kind == "alpn":
        listed = draw(st.lists(names, max_size=3))
        return ext(0x0010, vec(2, b"".join(vec(1, p) for p in listed)))
    if kind in ("sig", "groups"):
        return ext(0x000D if kind == "sig" else 0x000A, vec(2, u16_list(draw(code_lists))))
    if kind == "versions":
        return ext(0x002B, vec(1, u16_list(draw(code_lists))))
    if kind == "other":
        return ext(draw(codes), draw(st.binary(max_size=6)))
    known = st.sampled_from([0x0000, 0x0010, 0x000D, 0x000A, 0x002B])
    return ext(draw(st.one_of(known, codes)), draw(st.binary(max_size=10)))


@st.composite
def hello_message(draw: st.DrawFn) -> bytes:
    """A ClientHello message: half well formed (distinct extensions Python's reader takes,
    so the fingerprint itself is compared), half anything (odd lengths, long session ids,
    duplicate or malformed extensions, trailing bytes)."""
    good = draw(st.booleans())
    version = draw(st.sampled_from([0x0303, 0x0301, 0x0300, 0x0002, 0x7F1C]))
    session = 32 if good else draw(st.sampled_from([0, 32, 33]))
    ciphers = u16_list(draw(st.lists(codes, min_size=1 if good else 0, max_size=12)))
    if not good and draw(st.booleans()):
        ciphers += draw(st.binary(max_size=1))
    body = u16(version) + bytes(32) + vec(1, bytes(session)) + vec(2, ciphers)
    body += vec(1, b"\x00" if good else draw(st.sampled_from([b"\x00", b"", b"\x00\x01"])))
    if good:
        kinds = draw(st.lists(st.sampled_from(KINDS[:5]), unique=True, max_size=5))
        extensions = [well_formed(draw, kind) for kind in kinds]
        extensions += [well_formed(draw, "other") for _ in range(draw(st.integers(0, 3)))]
        if len({e[:2] for e in extensions}) == len(extensions):
            body += vec(2, b"".join(draw(st.permutations(extensions))))
    elif draw(st.integers(0, 5)):
        kinds = draw(st.lists(st.sampled_from(KINDS), max_size=8))
        body += vec(2, b"".join(any_form(draw, kind) for kind in kinds))
    if not good:
        # after the extensions: nothing, a stray byte, or a whole extension outside them
        body += draw(st.sampled_from([b"", b"", b"\x00", ext(0x0017, b"")]))
    return message(body)


@HYP
@given(hello_message())
def test_generated_hellos(data: bytes) -> None:
    agree(data)


@HYP
@given(st.data())
def test_mutated_real_hellos(data: st.DataObject) -> None:
    mutated = bytearray(data.draw(st.sampled_from(REAL)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    agree(bytes(mutated))


@HYP
@given(st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    agree(data)
    agree(message(data))
