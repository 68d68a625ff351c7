"""Fuzz targets (plain functions, no atheris here) and their generated seed corpora.

Each target takes one ``bytes`` input and fails with an ``AssertionError`` or an
unexpected exception when it finds a bug; :mod:`run` hands them to atheris, and
``tests/unit/test_fuzz_targets.py`` runs them over the seeds so they cannot rot.

* ``proxy``: byte 0-1 choose where the input is split, byte 2 the decoder's buffer cap,
  the rest is fed to :class:`~tunnel.wire.proxy_protocol.ProxyDecoder` whole, split at that
  point, and byte by byte: the three must agree (same header and trailing bytes, or all
  need more data, or all fail), only ``ProxyProtocolError`` may be raised, and the
  buffer never holds more than the cap.
* ``config``: the input, decoded as UTF-8 (undecodable bytes replaced), is given to
  :func:`~tunnel.config.parse_config`: it returns a ``Config`` or raises ``ConfigErrors``
  whose every error is located in the file and has a hint.
* ``ja4``: the input is a ClientHello handshake message; the compiled plane's JA4 (C,
  ``_fastplane.ja4``) and Python's (:func:`~tunnel.wire.ja4.message_ja4`) must give the
  same answer, None included (the target does nothing where the extension is not built).
  Its hypothesis twin, ``tests/unit/test_ja4_native.py``, runs in CI against the
  AddressSanitizer build (libasan preloaded there breaks atheris's coverage feedback).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src", ROOT / "tests"):  # the package; the harness's ClientHellos
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from harness.hello import openssl_first_flight, record_message  # noqa: E402

from tunnel import config  # noqa: E402
from tunnel.errors import ConfigError, ConfigErrors  # noqa: E402
from tunnel.wire import clienthello, proxy_protocol  # noqa: E402
from tunnel.wire.ja4 import message_ja4  # noqa: E402
from tunnel.wire.proxy_protocol import (  # noqa: E402
    NEED_DATA,
    ProxyDecoder,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    ssl_tlv,
)

MIN_CAP = 16 + 216  # the smallest cap ProxyDecoder accepts
CAPS = [MIN_CAP, 300, 4096 + 16, 16 + 0xFFFF]
Outcome = tuple[str, object, bytes]


def _outcome(decoder: ProxyDecoder, pieces: Iterator[bytes]) -> Outcome:
    """Feed ``pieces``; ("header", header, rest) or ("need", None, b"") or ("error", ...)."""
    try:
        for piece in pieces:
            result = decoder.feed(piece)
            if result is not NEED_DATA:
                # What followed the header in this piece, then every later piece.
                return ("header", result, decoder.rest + b"".join(pieces))
            assert decoder.buffered <= decoder.max_size, (decoder.buffered, decoder.max_size)
    except ProxyProtocolError as exc:
        assert str(exc)
        return ("error", None, b"")
    return ("need", None, b"")


def proxy(data: bytes) -> None:
    """The PROXY decoder target (see the module docstring)."""
    if len(data) < 3:
        return
    split = int.from_bytes(data[:2], "big")
    cap = CAPS[data[2] % len(CAPS)]
    body = data[3:]
    split %= len(body) + 1
    whole = _outcome(ProxyDecoder(cap), iter([body]))
    halves = _outcome(ProxyDecoder(cap), iter([body[:split], body[split:]]))
    bytewise = _outcome(ProxyDecoder(cap), (body[i : i + 1] for i in range(len(body))))
    assert whole == halves, (whole, halves, split)
    if body:  # an empty input is fed as one empty piece whole, as no piece bytewise
        assert whole == bytewise, (whole, bytewise)


def config_text(data: bytes) -> None:
    """The config reader target (see the module docstring)."""
    text = data.decode("utf-8", "replace")
    try:
        result = config.parse_config(text, "/etc/tunnel/fuzz.ini")
    except ConfigErrors as exc:
        assert exc.errors, "ConfigErrors without errors"
        for error in exc.errors:
            assert isinstance(error, ConfigError), error
            assert error.file == "/etc/tunnel/fuzz.ini", error
            assert error.hint, f"no hint: {error}"
        str(exc)
        return
    assert isinstance(result, config.Config)


def _native_ja4() -> Callable[[bytes], str | None] | None:
    try:
        from tunnel.dataplane import _fastplane
    except ImportError:
        return None
    function: Callable[[bytes], str | None] = _fastplane.ja4
    return function


NATIVE_JA4 = _native_ja4()


def ja4_hello(data: bytes) -> None:
    """The JA4 target (see the module docstring)."""
    if NATIVE_JA4 is not None:
        expected = message_ja4(data)
        assert NATIVE_JA4(data) == expected, (data.hex(), expected)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "proxy": proxy,
    "config": config_text,
    "ja4": ja4_hello,
}
MODULES = {"proxy": proxy_protocol, "config": config, "ja4": clienthello}


# --------------------------------------------------------------------------- seeds


def _proxy_seeds() -> list[bytes]:
    headers = [
        encode_v1(("192.0.2.1", 56324), ("192.0.2.2", 443)),
        encode_v1(("2001:db8::1", 1), ("2001:db8::2", 443)),
        encode_v1(None, None),
        encode_v2(("192.0.2.1", 56324), ("192.0.2.2", 443)),
        encode_v2(("2001:db8::1", 1), ("2001:db8::2", 443), [(1, b"h2"), (2, b"example.com")]),
        encode_v2(("10.0.0.1", 1), ("10.0.0.2", 2), [(5, bytes(16))], crc32c=True),
        encode_v2("/run/a.sock", "/run/b.sock", [(4, b"xyz")]),
        encode_v2(None, None, command="LOCAL"),
        encode_v2(
            ("10.0.0.1", 1),
            ("10.0.0.2", 2),
            [ssl_tlv(client_flags=7, verify=0, version="TLSv1.3", cn="alice", cipher="X")],
        ),
    ]
    seeds = []
    for i, header in enumerate(headers):
        for tail in (b"", b"\x16\x03\x01\x00\x05hello"):
            split = (len(header) // 2 + i).to_bytes(2, "big")
            seeds.append(split + bytes([i % len(CAPS)]) + header + tail)
    return seeds


def _config_seeds() -> list[bytes]:
    minimal = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"
    seeds = [
        (ROOT / "tunnel.ini").read_bytes(),
        minimal.encode(),
        (
            "[tunnel]\nworkers = 2\nidle_timeout = 1m\nmax_connections_per_ip = 3\n" + minimal
        ).encode(),
        (
            b"[backend:api]\nconnect = 10.0.0.5:9000, 10.0.0.6:9000\ntls = yes\n\n"
            b"[front]\naccept = *:443, [::1]:443\ncert = a.pem, b.pem\nalpn = h2, http/1.1\n"
            b"route = sni:api.example.com=api, alpn:h2=api\nbackend = api\n"
            b"proxy_from = 10.0.0.0/8\nproxy_protocol = v2\nproxy_cert_tlv = 0xE0\n"
        ),
    ]
    return seeds


def _ja4_seeds() -> list[bytes]:
    """ClientHello messages of Python's ssl module (OpenSSL): TLS 1.2 and 1.3, with and
    without SNI and ALPN (made by the tests' harness)."""
    return [
        record_message(openssl_first_flight(name, alpn, maximum))
        for name, alpn, maximum in (
            ("example.com", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3),
            (None, None, ssl.TLSVersion.TLSv1_3),
            ("example.com", ["x-~"], ssl.TLSVersion.TLSv1_2),
        )
    ]


def seeds(target: str) -> list[bytes]:
    """The seed inputs of ``target``."""
    return {"proxy": _proxy_seeds, "config": _config_seeds, "ja4": _ja4_seeds}[target]()


def dictionary(target: str) -> list[bytes]:
    """Tokens worth inserting (a libFuzzer dictionary)."""
    if target == "ja4":  # extension types JA4 reads, GREASE, the versions
        return [
            b"\x00\x00",
            b"\x00\x10",
            b"\x00\x0d",
            b"\x00\x0a",
            b"\x00\x2b",
            b"\x0a\x0a",
            b"\x03\x04",
        ]
    if target == "proxy":
        words = [b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"\r\n", proxy_protocol.V2_SIGNATURE]
        return [*words, b"\x21\x11", b"\x21\x21", b"\x21\x31", b"\x20\x00", b"255.255.255.255"]
    keys = sorted(config.TUNNEL_KEYS | config.LISTENER_KEYS | config.BACKEND_KEYS)
    words = [f"\n{k} = ".encode() for k in keys]
    words += [b"[tunnel]\n", b"[backend:", b"unix:/", b"[::1]:", b"*:443", b"sni:", b"alpn:"]
    return [*words, b"64k", b"500ms", b"yes", b"off", b"v2", b"1.3", b"0x"]
