"""The incremental ClientHello reader: byte by byte, split records, trailing bytes, bad input."""

from __future__ import annotations

import pytest
from harness.hello import ext, openssl_first_flight, u16, vec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnel.wire.clienthello import (
    NEED_DATA,
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    parse_client_hello,
    parse_handshake_message,
)

HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hello_body(
    ciphers: list[int] = [0x1301, 0xC02B],  # noqa: B006  (read only)
    extensions: list[bytes] | None = None,
    version: int = 0x0303,
    session_id: bytes = b"\x11" * 32,
) -> bytes:
    """A ClientHello message body built from the RFC 8446 4.1.2 layout."""
    body = u16(version) + b"\x5a" * 32 + vec(1, session_id)
    body += vec(2, b"".join(u16(c) for c in ciphers)) + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, b"".join(extensions))
    return body


def sni_ext(name: bytes) -> bytes:
    return ext(0x0000, vec(2, b"\x00" + vec(2, name)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(0x0010, vec(2, b"".join(vec(1, p) for p in protocols)))


def records(body: bytes, split: int = 16384) -> bytes:
    """The handshake message in records of at most ``split`` bytes."""
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    out = b""
    for i in range(0, len(message), split):
        out += b"\x16\x03\x01" + vec(2, message[i : i + split])
    return out


FULL_EXTENSIONS = [
    sni_ext(b"api.example.com"),
    alpn_ext(b"h2", b"http/1.1"),
    ext(0x000D, vec(2, u16(0x0403) + u16(0x0804))),
    ext(0x000A, vec(2, u16(0x001D) + u16(0x0017))),
    ext(0x002B, vec(1, u16(0x0304) + u16(0x0303))),
    ext(0x0017, b""),
]


def python_client_hello(server_name: str | None = "example.com") -> bytes:
    """A real first flight from Python's ssl module (OpenSSL), no socket needed."""
    return openssl_first_flight(server_name, ["h2", "http/1.1"])


def test_full_hello_is_parsed() -> None:
    data = records(hello_body(extensions=FULL_EXTENSIONS))
    hello = ClientHelloReader().feed(data)
    assert hello == ClientHello(
        legacy_version=0x0303,
        ciphers=(0x1301, 0xC02B),
        extensions=(0x0000, 0x0010, 0x000D, 0x000A, 0x002B, 0x0017),
        server_name="api.example.com",
        alpn=(b"h2", b"http/1.1"),
        signature_algorithms=(0x0403, 0x0804),
        groups=(0x001D, 0x0017),
        supported_versions=(0x0304, 0x0303),
        length=len(data) - 5,
    )


def test_hello_without_extensions() -> None:
    hello = ClientHelloReader().feed(records(hello_body(extensions=None)))
    assert hello is not None
    assert hello.extensions == () and hello.server_name is None and hello.alpn == ()


def test_byte_by_byte_and_trailing_bytes_kept() -> None:
    data = python_client_hello()
    trailing = b"\x14\x03\x03\x00\x01\x01more"
    reader = ClientHelloReader()
    stream = data + trailing
    results = [reader.feed(stream[i : i + 1]) for i in range(len(data))]
    assert all(r is NEED_DATA for r in results[:-1])
    hello = results[-1]
    assert hello is not None and hello.server_name == "example.com"
    assert reader.consumed == len(data)
    # Fed together, the hello's end is still where the trailing bytes start.
    again = ClientHelloReader()
    assert again.feed(stream) == hello
    assert again.consumed == len(data)
    assert again.feed(b"anything") == hello  # complete: later bytes are not parsed


def test_too_many_records_refused() -> None:
    body = hello_body(extensions=FULL_EXTENSIONS)
    assert ClientHelloReader().feed(records(body, len(body) // 30)) is not None
    with pytest.raises(ClientHelloError, match="over 32 records"):
        ClientHelloReader().feed(records(body, 3))


@pytest.mark.parametrize("split", [7, 100, 300])
def test_hello_split_over_records(split: int) -> None:
    data = records(hello_body(extensions=FULL_EXTENSIONS), split)
    reader = ClientHelloReader()
    hello = None
    for i in range(0, len(data), 3):
        hello = reader.feed(data[i : i + 3]) or hello
    assert hello is not None and hello.server_name == "api.example.com"
    assert reader.consumed == len(data)


def test_truncated_is_need_data_never_a_result() -> None:
    data = records(hello_body(extensions=FULL_EXTENSIONS))
    for cut in range(len(data)):
        assert ClientHelloReader().feed(data[:cut]) is NEED_DATA


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
        (b"\x80\x2e\x01\x03\x01", "SSLv2"),
        (b"\x16\x02\x00\x00\x10", "not TLS"),
        (b"\x16\x03\x01\x00\x00", "record length 0"),
        (b"\x16\x03\x01\x48\x01", "record length"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
        (b"\x15\x03\x03\x00\x02\x02\x28", "not a TLS handshake record"),
    ],
)
def test_garbage_fails_on_first_bytes(data: bytes, words: str) -> None:
    with pytest.raises(ClientHelloError, match=words):
        ClientHelloReader().feed(data)


def test_oversized_hello_refused_from_its_header() -> None:
    reader = ClientHelloReader(limit=1000)
    # Only the 4-byte handshake header of a 1001-byte hello: refused before the body.
    with pytest.raises(ClientHelloError, match="1001 bytes: more than 1000"):
        reader.feed(b"\x16\x03\x01\x40\x00\x01\x00\x03\xe9")


def test_buffer_stays_bounded_with_small_limit() -> None:
    body = hello_body(extensions=[ext(0x0015, b"\x00" * 900)])
    reader = ClientHelloReader(limit=len(body))
    assert reader.feed(records(body)) is not None
    with pytest.raises(ClientHelloError, match="more than"):
        ClientHelloReader(limit=len(body) - 1).feed(records(body)[:9])


def test_non_handshake_record_inside_the_hello_refused() -> None:
    data = records(hello_body(extensions=FULL_EXTENSIONS), 50)
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    with pytest.raises(ClientHelloError):
        ClientHelloReader().feed(data[:55] + alert)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (hello_body()[:40], "truncated"),
        (hello_body(ciphers=[]), "cipher suites"),
        (hello_body(session_id=b"x" * 33), "session id"),
        (hello_body(extensions=[sni_ext(b"a"), sni_ext(b"b")]), "twice"),
        (hello_body(extensions=[sni_ext(b"caf\xc3\xa9.example")]), "ASCII"),
        (hello_body(extensions=[ext(0x0000, b"")]), "server_name"),
        (hello_body(extensions=[alpn_ext(b"")]), "empty ALPN"),
        (hello_body(extensions=[ext(0x000D, vec(2, b"\x04"))]), "signature_algorithms"),
        (hello_body(extensions=[ext(0x002B, vec(1, b"\x03\x04") + b"x")]), "supported_versions"),
        (hello_body(extensions=[ext(0x000A, b"\x00\x09\x00")]), "supported_groups"),
        (hello_body(extensions=[]) + b"junk", "trailing bytes after the extensions"),
        (hello_body()[:-2] + b"\x00", "no compression"),
    ],
)
def test_malformed_bodies(body: bytes, words: str) -> None:
    with pytest.raises(ClientHelloError, match=words):
        parse_client_hello(body)
    with pytest.raises(ClientHelloError, match=words):
        ClientHelloReader().feed(records(body))


def test_unknown_name_types_skipped() -> None:
    names = b"\x05" + vec(2, b"other") + b"\x00" + vec(2, b"x.example")
    hello = parse_client_hello(hello_body(extensions=[ext(0x0000, vec(2, names))]))
    assert hello.server_name == "x.example"


def test_real_python_client_without_sni() -> None:
    hello = ClientHelloReader().feed(python_client_hello(None))
    assert hello is not None
    assert hello.server_name is None and 0x0000 not in hello.extensions
    assert hello.alpn == (b"h2", b"http/1.1")
    assert 0x0304 in hello.supported_versions and 0x001D in hello.groups


@HYP
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_input_raises_only_its_own_error(data: bytes, chunk: int) -> None:
    reader = ClientHelloReader(limit=512)
    try:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
    except ClientHelloError:
        pass


@HYP
@given(st.data())
def test_mutated_real_hellos_raise_only_its_own_error(data: st.DataObject) -> None:
    original = bytearray(records(hello_body(extensions=FULL_EXTENSIONS)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(original) - 1))
        original[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    try:
        hello = ClientHelloReader().feed(bytes(original[:cut]))
    except ClientHelloError:
        return
    if hello is not None:
        assert isinstance(hello.ciphers, tuple)


def test_handshake_message_parsed_as_the_records_are() -> None:
    """What the compiled plane hands over: the message alone, without its records."""
    data = python_client_hello()
    expected = ClientHelloReader().feed(data)
    message = data[5 : 5 + expected.length] if expected else b""
    assert parse_handshake_message(message) == expected


def test_handshake_message_every_truncation_refused() -> None:
    message = records(hello_body(extensions=FULL_EXTENSIONS))[5:]
    for end in range(len(message)):  # byte by byte: every shorter message is an error
        with pytest.raises(ClientHelloError):
            parse_handshake_message(message[:end])
    with pytest.raises(ClientHelloError, match="says"):
        parse_handshake_message(message + b"\x00")


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (b"\x02\x00\x00\x00", "type 2"),
        (b"\x01\x00\x40\x01" + b"\x00" * 0x4001, "more than"),
        (b"\x01\x00", "no handshake header"),
    ],
)
def test_handshake_message_refusals(message: bytes, words: str) -> None:
    with pytest.raises(ClientHelloError, match=words):
        parse_handshake_message(message)
