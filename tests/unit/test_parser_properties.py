"""Properties of the parsers beyond those next to their unit tests.

* config: listener values generated at random, rendered as ini text (with the units,
  spellings and list separators a person might use), parse back to the same fields.
* PROXY decoder: any input, fed whole, split at any points or byte by byte, gives the
  same outcome (header and trailing bytes, need-more-data, or ProxyProtocolError).
* The atheris fuzz targets (fuzz/targets.py) pass over their generated seeds.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnel.config import Address, ListenerConfig, parse_config
from tunnel.errors import ConfigErrors
from tunnel.wire.proxy_protocol import (
    NEED_DATA,
    ProxyDecoder,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
)

ROOT = Path(__file__).resolve().parents[2]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- config

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
BOOL_WORDS = {True: ["yes", "true", "on", "1", "Yes"], False: ["no", "false", "off", "0", "NO"]}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20}


@st.composite
def durations(draw: st.DrawFn, maximum: float) -> tuple[str, float]:
    """(text, seconds) of a positive duration up to ``maximum`` seconds."""
    unit = draw(st.sampled_from(sorted(DURATION_UNITS)))
    number = draw(st.integers(1, int(maximum / DURATION_UNITS[unit])))
    space = draw(st.sampled_from(["", " "]))
    return f"{number}{space}{unit}", number * DURATION_UNITS[unit]


@st.composite
def sizes(draw: st.DrawFn, low: int, high: int) -> tuple[str, int]:
    unit = draw(st.sampled_from(sorted(SIZE_UNITS)))
    factor = SIZE_UNITS[unit]
    number = draw(st.integers(-(-low // factor), high // factor))
    return f"{number}{unit}", number * factor


def booleans() -> st.SearchStrategy[tuple[str, bool]]:
    return st.booleans().flatmap(lambda b: st.sampled_from(BOOL_WORDS[b]).map(lambda w: (w, b)))


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.compressed),
    st.sampled_from(["localhost", "backend.example.com", "a-1.internal"]),
)
ports = st.integers(1, 65535)
paths = st.lists(st.text("abcxyz019_-", min_size=1, max_size=8), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)
alpn_names = st.sampled_from(["h2", "http/1.1", "acme-tls/1", "imap", "x"])
networks = st.one_of(
    st.builds(
        lambda ip, n: ipaddress.ip_network((ip, n), strict=False),
        st.ip_addresses(v=4),
        st.integers(0, 32),
    ),
    st.builds(
        lambda ip, n: ipaddress.ip_network((ip, n), strict=False),
        st.ip_addresses(v=6),
        st.integers(0, 128),
    ),
)


def tcp_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@st.composite
def listener_values(draw: st.DrawFn, name: str, accept_ports: list[int]) -> dict[str, Any]:
    """Random values of one listener: {key: (text, expected)} plus the name."""
    accept = [(draw(hosts), port) for port in accept_ports]
    connect_tcp = draw(st.lists(st.tuples(hosts, ports), min_size=0, max_size=3, unique=True))
    connect_unix = draw(st.lists(paths, max_size=2, unique=True))
    if not connect_tcp and not connect_unix:
        connect_tcp = [("127.0.0.1", 8080)]
    certs = draw(st.lists(paths.map(lambda p: p + ".pem"), min_size=1, max_size=3, unique=True))
    tls_min, tls_max = sorted(
        draw(st.lists(st.sampled_from(["1.2", "1.3"]), min_size=2, max_size=2))
    )
    alpn = draw(st.lists(alpn_names, max_size=3, unique=True))
    nets = draw(st.lists(networks, max_size=3, unique=True))
    sep = draw(st.sampled_from([", ", " ", ","]))
    values: dict[str, tuple[str, Any]] = {
        "accept": (
            sep.join(tcp_text(h, p) for h, p in accept),
            tuple(Address("tcp", h, p) for h, p in accept),
        ),
        "connect": (
            sep.join(
                [*(tcp_text(h, p) for h, p in connect_tcp), *(f"unix:{p}" for p in connect_unix)]
            ),
            tuple(
                [
                    *(Address("tcp", h, p) for h, p in connect_tcp),
                    *(Address("unix", path=p) for p in connect_unix),
                ]
            ),
        ),
        "cert": (", ".join(certs), tuple(certs)),
        "tls_min": (draw(st.sampled_from(["", "TLS", "tlsv"])) + tls_min, tls_min),
        "tls_max": (tls_max, tls_max),
        "handshake_timeout": draw(durations(300.0)),
        "connect_timeout": draw(durations(300.0)),
        "idle_timeout": draw(durations(86400.0)),
        "proxy_timeout": draw(durations(300.0)),
        "buffer_size": draw(sizes(4 << 10, 16 << 20)),
        "backlog": draw(st.integers(1, 65535).map(lambda n: (str(n), n))),
        "max_connections": draw(st.integers(1, 10_000_000).map(lambda n: (str(n), n))),
        "max_connections_per_ip": draw(st.integers(0, 1000).map(lambda n: (str(n), n))),
        "max_handshakes_per_ip": draw(st.integers(0, 1000).map(lambda n: (str(n), n))),
        "proxy_protocol": draw(
            st.sampled_from(["off", "v1", "v2", "V2"]).map(lambda w: (w, w.lower()))
        ),
        "proxy_crc32c": draw(booleans()),
        "proxy_unique_id": draw(booleans()),
        "proxy_keep_tlvs": draw(booleans()),
        "sni_strict": draw(booleans()),
        "proxy_cert_tlv": draw(st.integers(0xE0, 0xEF).map(lambda n: (hex(n), n))),
        "alpn": (sep.join(alpn), tuple(alpn)),
        "proxy_from": (sep.join(str(n) for n in nets), tuple(nets)),
        "curves": draw(
            st.sampled_from(["X25519", "X25519:P-256", "P-384:P-256"]).map(lambda c: (c, c))
        ),
    }
    # Leave out some keys at random: the field then keeps its default.
    optional = sorted(set(values) - {"accept", "connect", "cert"})
    dropped = draw(st.sets(st.sampled_from(optional)))
    # An empty list is not written at all ("alpn =" is an error: "give a value or delete").
    dropped |= {k for k, v in values.items() if v[1] == ()}
    return {"name": name, **{k: v for k, v in values.items() if k not in dropped}}


def render(listeners: list[dict[str, Any]]) -> str:
    parts = []
    for values in listeners:
        lines = [f"[{values['name']}]"]
        lines += [f"{key} = {value[0]}" for key, value in values.items() if key != "name"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def assert_fields(listener: ListenerConfig, values: dict[str, Any]) -> None:
    defaults = ListenerConfig(name="x", accept=(), cert=(), key=None, connect=())
    for field in ListenerConfig.__slots__:
        if field in ("name", "key", "routes", "backend"):
            continue
        got = getattr(listener, field)
        expected = values[field][1] if field in values else getattr(defaults, field)
        if isinstance(expected, float):
            assert math.isclose(got, expected, rel_tol=1e-9), (field, got, expected)
        else:
            assert got == expected, (field, got, expected)


@st.composite
def configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 3))
    names = draw(
        st.lists(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(
                lambda n: n.lower() not in ("tunnel", "default")
            ),
            min_size=count,
            max_size=count,
            unique_by=str.lower,
        )
    )
    all_ports = draw(st.lists(ports, min_size=count * 2, max_size=count * 2, unique=True))
    result = []
    for i, name in enumerate(names):
        n_accept = draw(st.integers(1, 2))
        result.append(draw(listener_values(name, all_ports[2 * i : 2 * i + n_accept])))
    return result


@PROPS
@given(configs())
def test_config_round_trip(listeners: list[dict[str, Any]]) -> None:
    text = render(listeners)
    config = parse_config(text, "/etc/tunnel/gen.ini")
    assert [lc.name for lc in config.listeners] == [v["name"] for v in listeners], text
    for listener, values in zip(config.listeners, listeners, strict=True):
        assert_fields(listener, values)


# --------------------------------------------------------------------------- PROXY


def outcome(pieces: list[bytes], cap: int) -> tuple[str, object, bytes]:
    decoder = ProxyDecoder(cap)
    try:
        for i, piece in enumerate(pieces):
            result = decoder.feed(piece)
            if result is not NEED_DATA:
                return ("header", result, decoder.rest + b"".join(pieces[i + 1 :]))
            assert decoder.buffered <= cap
    except ProxyProtocolError:
        return ("error", None, b"")
    return ("need", None, b"")


HEADERS = [
    encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2)),
    encode_v1(("::1", 1), ("::2", 2)),
    encode_v1(None, None),
    encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), [(1, b"h2")], crc32c=True),
    encode_v2("/a", "/b", [(4, b"x" * 20)]),
    encode_v2(None, None, command="LOCAL"),
]


@st.composite
def proxy_inputs(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or a real header with a few bytes changed, cut or extended."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(st.sampled_from(HEADERS)))
    for pos, value in draw(
        st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=3)
    ):
        data[pos % len(data)] = value
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=20))


@PROPS
@given(proxy_inputs(), st.lists(st.integers(0, 300), max_size=6), st.sampled_from([232, 300, 4112]))
def test_proxy_split_and_bytewise_equal_whole(data: bytes, cuts: list[int], cap: int) -> None:
    whole = outcome([data], cap)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    split = outcome([data[a:b] for a, b in itertools.pairwise(points)], cap)
    bytewise = outcome([data[i : i + 1] for i in range(len(data))], cap) if data else whole
    assert whole == split == bytewise


# --------------------------------------------------------------------------- fuzz targets


def _fuzz_targets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_targets", ROOT / "fuzz" / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_targets", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["proxy", "config", "ja4"])
def test_fuzz_targets_pass_their_seeds(target: str) -> None:
    """The fuzz targets run without atheris over their seeds (so they cannot rot)."""
    targets = _fuzz_targets()
    seeds = targets.seeds(target)
    assert seeds and targets.dictionary(target)
    for seed in seeds:
        targets.TARGETS[target](seed)


# --------------------------------------------------------------------------- fuzz findings


@pytest.mark.parametrize("key", ["client_ca", "crl"])
@pytest.mark.parametrize("value", [",", " , ,", "\n  ,"])
def test_fuzz_finding_path_list_of_separators_only(key: str, value: str) -> None:
    """atheris (config target): ``client_ca = ,`` raised IndexError instead of a
    ConfigError naming the key."""
    text = (
        "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"
        f"verify = required\nclient_ca = /c/ca.pem\n{key} = {value}\n"
    ).replace("client_ca = /c/ca.pem\nclient_ca", "client_ca")
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "/etc/tunnel/t.ini")
    errors = [e for e in info.value.errors if e.key == key]
    assert errors and "has no file path" in str(errors[0]), [str(e) for e in info.value.errors]
    assert errors[0].section == "web" and errors[0].hint


@pytest.mark.parametrize("key", ["keylog_file", "cert", "ticket_key_file", "alpn"])
def test_fuzz_finding_nul_byte_in_a_value(key: str) -> None:
    """atheris (config target): ``keylog_file = ~<NUL>`` raised ValueError (embedded null
    byte) from os.path.expanduser instead of a ConfigError naming the key."""
    text = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"
    text = text.replace(f"\n{key} = ", "\nold = ") + f"{key} = ~\0x\n"
    text = text.replace("\nold = /c/web.pem", "")
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "/etc/tunnel/t.ini")
    errors = [e for e in info.value.errors if e.key == key and "NUL" in e.message]
    assert errors and errors[0].section == "web" and errors[0].hint, str(info.value)
