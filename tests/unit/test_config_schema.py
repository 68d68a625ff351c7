"""The schema (tunnel.config.schema): one declaration per key, and what derives from it."""

from __future__ import annotations

import dataclasses

import pytest

from tunnel.config import (
    BACKEND_KEYS,
    INHERITABLE_KEYS,
    KEYS,
    LISTENER_KEYS,
    TUNNEL_KEYS,
    BackendConfig,
    ListenerConfig,
    Scope,
    TunnelSettings,
    parse_config,
)
from tunnel.config.acme import AcmeSettings
from tunnel.config.schema import Kind, default, keys
from tunnel.errors import ConfigErrors

MODELS: dict[Kind, type] = {
    "tunnel": TunnelSettings,
    "listener": ListenerConfig,
    "backend": BackendConfig,
    "acme": AcmeSettings,
}
KINDS: tuple[Kind, ...] = ("tunnel", "listener", "backend", "acme")
LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"


def test_key_sets_are_unchanged() -> None:
    """Other rooms and users rely on these sets: the schema gives the same ones as before."""
    process = {
        *("workers", "log_level", "log_target", "log_facility", "max_connections"),
        *("drain_timeout", "log_file", "watch", "pid_file", "log_format", "admin"),
        *("daemon", "user", "group", "allow_root", "shutdown_delay", "log_syslog_address"),
        *("resolvers", "dataplane", "log_connections"),
    }
    # with proxy_ja4_tlv, proxy_group_tlv, deny_ja4 and the two per-IP rates
    assert len(INHERITABLE_KEYS) == 27
    assert process | INHERITABLE_KEYS == TUNNEL_KEYS
    assert {
        *("accept", "cert", "key", "connect", "max_connections", "cert_dir", "backend"),
        *("route", "client_ca", "verify", "crl", "allow_cn", "allow_dns", "allow_uri"),
        *("client", "keylog_file", "acme"),
    } == LISTENER_KEYS - INHERITABLE_KEYS
    assert {
        *("connect", "connect_timeout", "proxy_protocol", "tls", "ca", "sni", "cert", "key"),
        *("keylog_file", "passthrough"),
        *("balance", "max_fails", "fail_backoff", "health_check", "health_interval"),
    } == BACKEND_KEYS


@pytest.mark.parametrize("kind", KINDS)
def test_each_key_sets_a_field_and_each_field_has_a_key(kind: Kind) -> None:
    # acme_state_dir: [acme]'s state_dir, given to each listener with acme names.
    fields = {f.name for f in dataclasses.fields(MODELS[kind])} - {"name", "acme_state_dir"}
    attrs = [key.attr for key in keys(kind).values()]
    if kind == "tunnel":  # [tunnel] also holds the listener defaults
        attrs = [k.attr for k in keys(kind).values() if k.scope & Scope.TUNNEL]
    assert len(attrs) == len(set(attrs))
    assert set(attrs) == fields


SCOPES = {
    "tunnel": Scope.TUNNEL | Scope.DEFAULT,
    "listener": Scope.LISTENER | Scope.DEFAULT,
    "backend": Scope.BACKEND,
    "acme": Scope.ACME,
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_name_is_declared_once_per_kind_of_section(kind: Kind) -> None:
    names = [key.name for key in KEYS if key.scope & SCOPES[kind]]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(keys(kind))


def test_every_key_has_a_one_line_doc() -> None:
    for key in KEYS:
        assert key.doc and "\n" not in key.doc and len(key.doc) < 100, key.name


def test_defaults_come_from_the_model() -> None:
    tunnel, listener = keys("tunnel"), keys("listener")
    assert default("tunnel", tunnel["workers"]) == 0
    assert default("tunnel", tunnel["idle_timeout"]) == 300.0  # a listener default
    assert default("listener", listener["buffer_size"]) == 262144
    assert default("backend", keys("backend")["tls"]) is False
    assert default("listener", listener["accept"]) is None


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_what_an_empty_section_parses_to(kind: Kind) -> None:
    text = LISTENER + "[backend:b]\nconnect = 127.0.0.1:1\n[acme]\ndirectory = https://c/d\n"
    config = parse_config(text, "/t.ini")
    parsed = {"tunnel": config.tunnel, "listener": config.listeners[0], "backend": None}
    parsed["backend"] = config.backends[0]
    parsed["acme"] = config.acme
    for key in keys(kind).values():
        if key.required or (kind == "tunnel" and not key.scope & Scope.TUNNEL):
            continue
        assert getattr(parsed[kind], key.attr) == default(kind, key), key.name


@pytest.mark.parametrize(
    ("section", "key", "where"),
    [
        ("[tunnel]", "accept = 127.0.0.1:1", "a listener section"),
        ("[web2]", "workers = 2", "[tunnel]"),
        ("[web2]", "tls = yes", "a [backend:NAME] section"),
        ("[backend:b]", "alpn = h2", "a listener section"),
        ("[backend:b]", "user = x", "[tunnel]"),
    ],
)
def test_a_key_in_the_wrong_section_says_where_it_belongs(
    section: str, key: str, where: str
) -> None:
    text = LISTENER + f"{section}\n{key}\n"
    if section == "[web2]":
        text += "accept = 127.0.0.1:2\ncert = /c.pem\nconnect = 127.0.0.1:1\n"
    if section == "[backend:b]":
        text += "connect = 127.0.0.1:1\n"
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "/t.ini")
    (error,) = info.value.errors
    assert error.key == key.split(" ")[0]
    assert f"belongs in {where}" in str(error)


def test_every_bad_address_of_a_line_is_reported() -> None:
    """A converter finding several problems in one value reports each (ValueProblems)."""
    text = LISTENER.replace("127.0.0.1:8080", "*:80 [::1] unix:/" + "x" * 200 + " 10.0.0.1:1")
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "/t.ini")
    messages = [e.message for e in info.value.errors]
    assert [(e.section, e.key) for e in info.value.errors] == [("web", "connect")] * 3
    assert "cannot connect to '*:80'" in messages[0]
    assert "has no port" in messages[1]
    assert "too long" in messages[2]
