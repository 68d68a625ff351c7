"""Properties of the schema-driven parser, over every key the schema declares.

tests/unit/test_parser_properties.py round-trips random listener values; these cover
what the schema now decides for every key: where it may be written, what [tunnel]
passes on, how paths resolve, and that order and syntax slips do not change the report.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunnel.config import INHERITABLE_KEYS, KEYS, Scope, parse_config, parse_partial
from tunnel.config.context import Context
from tunnel.config.parser import read_section
from tunnel.config.schema import Kind, keys
from tunnel.errors import ConfigError, ConfigErrors

PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILE = "/etc/tunnel/p.ini"
KINDS: tuple[Kind, ...] = ("tunnel", "listener", "backend")
SECTION = {"tunnel": "tunnel", "listener": "web", "backend": "backend:b"}
REQUIRED = {
    "tunnel": {},
    "listener": {"accept": "127.0.0.1:8443", "cert": "/c/web.pem", "connect": "127.0.0.1:8080"},
    "backend": {"connect": "127.0.0.1:9000"},
}
# Valid texts of every listener default [tunnel] may set (a test checks that none is missing).
SAMPLES: dict[str, list[str]] = {
    "tls_min": ["1.2", "TLSv1.3"],
    "tls_max": ["1.3"],
    "ciphers": ["HIGH:!aNULL", "ECDHE+AESGCM"],
    "ciphersuites": ["TLS_AES_128_GCM_SHA256"],
    "curves": ["X25519", "P-256:X25519"],
    "handshake_timeout": ["3s", "500ms", "2m"],
    "connect_timeout": ["1", "250ms"],
    "idle_timeout": ["1h", "45s"],
    "buffer_size": ["16k", "1m", "8192"],
    "backlog": ["1", "511", "65535"],
    "proxy_protocol": ["off", "v1", "V2"],
    "proxy_crc32c": ["yes", "off"],
    "proxy_unique_id": ["true", "0"],
    "proxy_cert_tlv": ["0xE0", "off"],
    "proxy_keep_tlvs": ["on", "no"],
    "proxy_from": ["10.0.0.0/8", "::1/128, 192.0.2.0/24"],
    "proxy_timeout": ["2s"],
    "sni_strict": ["yes", "no"],
    "alpn": ["h2, http/1.1", "imap"],
    "ticket_key_file": ["tickets.key", "/etc/tunnel/t.key"],
    "max_connections_per_ip": ["0", "7"],
    "max_handshakes_per_ip": ["3"],
    "proxy_ja4_tlv": ["0xE1", "off"],
    "proxy_group_tlv": ["0xE2", "off"],
    "deny_ja4": ["t13d1516h2_8daaf6152771_e5627efa2ab1", "t12i0203h1_aaaaaaaaaaaa_000000000000"],
    "max_connection_rate_per_ip": ["20/s burst 40", "off"],
    "max_handshake_rate_per_ip": ["300/m"],
}


def section(kind: Kind, lines: list[tuple[str, str]]) -> str:
    body = "".join(f"{key} = {value}\n" for key, value in lines)
    text = f"[{SECTION[kind]}]\n{body}"
    if kind != "listener":  # every file needs a listener
        text += "[web]\n" + "".join(f"{k} = {v}\n" for k, v in REQUIRED["listener"].items())
    return text


def report(text: str) -> list[ConfigError]:
    return list(parse_partial(text, FILE).errors)


def test_samples_cover_every_inheritable_key() -> None:
    assert set(SAMPLES) == INHERITABLE_KEYS


@PROPS
@given(st.data())
def test_tunnel_passes_its_listener_defaults_on(data: st.DataObject) -> None:
    """A default written in [tunnel] gives a listener (and a backend, for its keys) the
    same value as writing it there; the section's own line wins."""
    chosen = data.draw(st.sets(st.sampled_from(sorted(SAMPLES)), min_size=1))
    lines = [(k, data.draw(st.sampled_from(SAMPLES[k]))) for k in sorted(chosen)]
    listener = [*REQUIRED["listener"].items()]
    backend = "[backend:b]\nconnect = 127.0.0.1:9000\n"
    inherited = parse_config(
        "[tunnel]\n"
        + "".join(f"{k} = {v}\n" for k, v in lines)
        + section("listener", listener)
        + backend,
        FILE,
    )
    written = parse_config(section("listener", listener + lines) + backend, FILE)
    assert inherited.listeners == written.listeners
    for key, _ in lines:
        if key in keys("backend"):
            attr = keys("backend")[key].attr
            assert getattr(inherited.backends[0], attr) == getattr(written.listeners[0], attr)


@PROPS
@given(st.sampled_from(KINDS), st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True))
def test_an_unknown_key_is_one_located_error(kind: Kind, name: str) -> None:
    assume(name not in keys(kind))
    lines = [*REQUIRED[kind].items(), (name, "1")]
    (error,) = report(section(kind, lines))
    assert (error.section, error.key) == (SECTION[kind], name)
    assert error.hint and "unknown key" in error.message
    assert any(word in error.hint for word in ("did you mean", "belongs in", "known keys"))


@PROPS
@given(st.data())
def test_the_order_of_lines_does_not_change_what_is_found(data: st.DataObject) -> None:
    """Required keys, their alternatives and cross-key checks do not depend on order."""
    kind = data.draw(st.sampled_from(KINDS))
    names = sorted(keys(kind))
    picked = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=6))
    values = st.sampled_from(["yes", "1", "v2", "h2", "a.pem", "127.0.0.1:1", "", "x y"])
    lines = [(name, data.draw(values)) for name in picked]
    shuffled = list(lines)
    random.Random(data.draw(st.integers())).shuffle(shuffled)

    def found(order: list[tuple[str, str]]) -> set[tuple[str | None, str | None, str]]:
        return {(e.section, e.key, e.message) for e in report(section(kind, order))}

    assert found(lines) == found(shuffled)


PATH_KEYS = [(kind, key) for kind in KINDS for key in keys(kind).values() if key.path]


@PROPS
@given(
    st.sampled_from(PATH_KEYS),
    st.lists(st.text("abc_-.", min_size=1, max_size=5), min_size=1, max_size=3),
    st.sampled_from(["", "/", "~/"]),
)
def test_paths_resolve_against_the_files_directory(
    kind_key: tuple[Kind, object], parts: list[str], prefix: str
) -> None:
    kind, key = kind_key
    assert not isinstance(key, str)
    path = prefix + "/".join(parts)
    text = f"unix:{path}" if key.path == "socket" else path
    ctx = Context(FILE, "/etc/tunnel")
    fields = read_section(SECTION[kind], kind, {key.name: text}, {}, ctx).fields
    value = fields[key.attr]
    first = value[0] if isinstance(value, tuple) else value
    got = first.path if key.path == "socket" else first
    want = os.path.expanduser(path)
    want = want if os.path.isabs(want) else os.path.normpath(os.path.join("/etc/tunnel", want))
    assert got == want


TEXT = st.text(
    st.characters(whitelist_categories=("L", "N"), whitelist_characters="./_-:,*[]"),
    min_size=1,
    max_size=20,
).filter(lambda t: t[0] not in ":[")


@PROPS
@given(st.sampled_from(KINDS), st.data())
def test_a_key_and_value_without_equals_is_a_syntax_error_there(
    kind: Kind, data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(keys(kind))))
    value = data.draw(TEXT)
    lines = [(k, v) for k, v in REQUIRED[kind].items() if k != key]
    text = section(kind, lines).replace("\n", f"\n{key} {value}\n", 1)
    errors = report(text)
    located = [e for e in errors if (e.section, e.key) == (SECTION[kind], key)]
    assert len(located) == 1, [str(e) for e in errors]
    assert "line 2:" in located[0].message and "has no '='" in located[0].message
    assert located[0].hint == f"write '{key} = {value.strip()}'"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_keys_of_the_schema(kind: Kind) -> None:
    assert set(keys(kind)) <= {key.name for key in KEYS}
    assert all(
        key.scope & (Scope.TUNNEL | Scope.LISTENER | Scope.DEFAULT | Scope.BACKEND)
        for key in keys(kind).values()
    )
    with pytest.raises(ConfigErrors):
        parse_config(f"[{SECTION[kind]}]\n", FILE)
