"""JA4 against the FoxIO specification's published example, and its GREASE/order rules.

The captured hellos of real clients, checked against a second implementation, are in
tests/integration/test_ja4_clients.py.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.wire.clienthello import ClientHello, ClientHelloReader
from tunnel.wire.ja4 import alpn_chars, is_grease, ja4, ja4_raw, message_ja4

# The example of technical_details/JA4.md (FoxIO): the values in the client's order.
SPEC_CIPHERS = (
    *(0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8),
    *(0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035),
)
SPEC_EXTENSIONS = (
    *(0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D),
    *(0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015),
)
SPEC_SIGNATURES = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
SPEC_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
SPEC_JA4_R = (
    "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
    "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
    "0403,0804,0401,0503,0805,0501,0806,0601"
)
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]


def spec_hello(**changes: object) -> ClientHello:
    fields: dict[str, object] = {
        "legacy_version": 0x0303,
        "ciphers": SPEC_CIPHERS,
        "extensions": SPEC_EXTENSIONS,
        "server_name": "example.com",
        "alpn": (b"h2", b"http/1.1"),
        "signature_algorithms": SPEC_SIGNATURES,
        "groups": (0x001D, 0x0017),
        "supported_versions": (0x0304, 0x0303),
    }
    fields.update(changes)
    return ClientHello(**fields)  # type: ignore[arg-type]


def test_published_example() -> None:
    assert ja4(spec_hello()) == SPEC_JA4
    assert ja4_raw(spec_hello()) == SPEC_JA4_R


def test_grease_values() -> None:
    assert all(is_grease(g) for g in GREASE)
    assert not any(is_grease(v) for v in (0x0A0B, 0x1A0A, 0x0000, 0x1301, 0xFAFB))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_grease_and_extension_order_do_not_change_it(data: st.DataObject) -> None:
    extensions = list(data.draw(st.permutations(SPEC_EXTENSIONS)))
    ciphers = list(SPEC_CIPHERS)
    for values in (extensions, ciphers):
        for grease in data.draw(st.lists(st.sampled_from(GREASE), max_size=3)):
            values.insert(data.draw(st.integers(0, len(values))), grease)
    hello = spec_hello(
        extensions=tuple(extensions),
        ciphers=tuple(ciphers),
        supported_versions=(data.draw(st.sampled_from(GREASE)), 0x0304, 0x0303),
        signature_algorithms=(data.draw(st.sampled_from(GREASE)), *SPEC_SIGNATURES),
    )
    assert ja4(hello) == SPEC_JA4


def test_cipher_order_does_not_change_it_but_signature_order_does() -> None:
    assert ja4(spec_hello(ciphers=tuple(reversed(SPEC_CIPHERS)))) == SPEC_JA4
    changed = ja4(spec_hello(signature_algorithms=tuple(reversed(SPEC_SIGNATURES))))
    assert changed.split("_")[:2] == SPEC_JA4.split("_")[:2]
    assert changed != SPEC_JA4


def test_sni_and_alpn_only_change_part_a() -> None:
    no_sni = spec_hello(
        server_name=None, extensions=tuple(e for e in SPEC_EXTENSIONS if e), alpn=(b"http/1.1",)
    )
    assert ja4(no_sni) == "t13i1515h1_8daaf6152771_e5627efa2ab1"


@pytest.mark.parametrize(
    ("changes", "prefix"),
    [
        ({"supported_versions": ()}, "t12d"),
        ({"supported_versions": (), "legacy_version": 0x0301}, "t10d"),
        ({"supported_versions": (0x0303,)}, "t12d"),
        ({"supported_versions": (), "legacy_version": 0x0300}, "ts3d"),
        ({"supported_versions": (), "legacy_version": 0x7F00}, "t00d"),
        ({"alpn": ()}, "t13d151600"),
        ({"ciphers": tuple(range(1, 120))}, "t13d9916"),
    ],
)
def test_part_a(changes: dict[str, object], prefix: str) -> None:
    assert ja4(spec_hello(**changes)).startswith(prefix)


def test_no_signature_algorithms_no_underscore() -> None:
    raw = ja4_raw(spec_hello(signature_algorithms=()))
    assert raw.endswith("_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01")


def test_empty_lists_hash_to_zeros() -> None:
    hello = ClientHello(0x0303, ciphers=(GREASE[0],), extensions=(0x0000, 0x0010))
    assert ja4(hello) == "t12d0002" + "00_000000000000_000000000000"


@pytest.mark.parametrize(
    ("first", "chars"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),
        (b"acme-tls/1", "a1"),
        (b"\xab\xcd", "ad"),  # non-alphanumeric ends: first and last hex digit
        (b"h2/", "6f"),  # 68 32 2f
        (None, "00"),
    ],
)
def test_alpn_chars(first: bytes | None, chars: str) -> None:
    assert alpn_chars(first) == chars


def test_message_ja4_of_a_handshake_message() -> None:
    """The compiled plane's entry: the hello message alone; None without one or if bad."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = outgoing.read()
    hello = ClientHelloReader().feed(data)
    assert hello is not None
    message = data[5 : 5 + hello.length]
    assert message_ja4(message) == ja4(hello)
    assert message_ja4(None) is None
    assert message_ja4(message[:-1]) is None
    assert message_ja4(b"\x02" + message[1:]) is None
