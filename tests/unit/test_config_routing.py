"""Unit tests for the SNI, ALPN and routing keys and [backend:NAME] sections of the config."""

from __future__ import annotations

import pytest

from tunnel.config import Address, BackendConfig, parse_config
from tunnel.config.routing import Route
from tunnel.errors import ConfigError, ConfigErrors

FILE = "/etc/tunnel/test.ini"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, FILE)


def errors(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    for error in info.value.errors:
        assert error.hint, str(error)
    return info.value.errors


LISTENER = "[web]\naccept = 127.0.0.1:8443\n"


def test_cert_dir_replaces_cert_and_is_resolved() -> None:
    (web,) = parse(LISTENER + "cert_dir = certs.d\nconnect = 127.0.0.1:8080\n").listeners
    assert web.cert == ()
    assert web.cert_dir == "/etc/tunnel/certs.d"


def test_cert_list_and_sni_strict() -> None:
    text = LISTENER + "cert = a.pem, /x/b.pem\nsni_strict = yes\nconnect = 127.0.0.1:1\n"
    (web,) = parse(text).listeners
    assert web.cert == ("/etc/tunnel/a.pem", "/x/b.pem")
    assert web.sni_strict is True


def test_missing_cert_mentions_cert_dir() -> None:
    (error,) = errors(LISTENER + "connect = 127.0.0.1:1\n")
    assert error.key == "cert"
    assert "cert_dir" in str(error)


def test_sni_strict_must_be_boolean() -> None:
    (error,) = errors(LISTENER + "cert = a.pem\nconnect = 127.0.0.1:1\nsni_strict = maybe\n")
    assert error.key == "sni_strict"
    assert "yes or no" in str(error)


def test_alpn_list_and_default_from_tunnel() -> None:
    text = "[tunnel]\nalpn = h2 http/1.1\n" + LISTENER + "cert = a.pem\nconnect = 127.0.0.1:1\n"
    assert parse(text).listeners[0].alpn == ("h2", "http/1.1")
    bad = LISTENER + "cert = a.pem\nconnect = 127.0.0.1:1\nalpn = h2, h2\n"
    assert errors(bad)[0].key == "alpn"


ROUTED = """\
[backend:api]
connect = 127.0.0.1:9001, 127.0.0.1:9002
connect_timeout = 2s
proxy_protocol = v2

[backend:web]
connect = unix:/run/web.sock

[front]
accept = 127.0.0.1:8443
cert = a.pem
backend = web
route = sni:api.example.com=api, alpn:h2=api
"""


def test_backend_sections_and_routes() -> None:
    config = parse(ROUTED)
    assert config.backends == (
        BackendConfig(
            "api",
            (Address("tcp", "127.0.0.1", 9001), Address("tcp", "127.0.0.1", 9002)),
            2.0,
            "v2",
        ),
        BackendConfig("web", (Address("unix", path="/run/web.sock"),)),
    )
    (front,) = config.listeners
    assert front.backend == "web"
    assert front.connect == ()
    assert front.routes == (Route("sni", "api.example.com", "api"), Route("alpn", "h2", "api"))


def test_unknown_backend_has_did_you_mean() -> None:
    found = errors(
        ROUTED.replace("=api, alpn", "=apj, alpn").replace("backend = web", "backend = wbe")
    )
    by_key = {e.key: str(e) for e in found}
    assert "did you mean 'api'?" in by_key["route"]
    assert "did you mean 'web'?" in by_key["backend"]


def test_unknown_backend_without_close_match_says_what_to_add() -> None:
    (error,) = errors(ROUTED.replace("backend = web", "backend = zzzzzz"))
    assert "[backend:zzzzzz]" in str(error)


def test_bad_route_rule_is_located() -> None:
    (error,) = errors(ROUTED.replace("alpn:h2=api", "h2=api"))
    assert error.section == "front"
    assert error.key == "route"
    assert "sni:" in (error.hint or "")


def test_connect_and_backend_conflict() -> None:
    (error,) = errors(ROUTED.replace("backend = web", "backend = web\nconnect = 127.0.0.1:1"))
    assert "both" in str(error)


def test_backend_section_keys_are_checked() -> None:
    found = errors(ROUTED.replace("connect_timeout = 2s", "conect_timeout = 2s"))
    assert "did you mean 'connect_timeout'?" in str(found[0])
    found = errors(ROUTED.replace("connect = unix:/run/web.sock", ""))
    assert found[0].section == "backend:web"
    assert found[0].key == "connect"
    found = errors(ROUTED.replace("[backend:web]", "[backend:w eb]"))
    assert any("invalid backend name" in str(e) for e in found)


BASE = LISTENER + "cert = a.pem\nconnect = 127.0.0.1:1\n"


def test_client_auth_keys() -> None:
    text = BASE + (
        "client_ca = ca.pem, /other-ca.pem\nverify = required\ncrl = a.crl, /b.crl\n"
        "allow_cn = alice, bob\nallow_dns = Alice.Example\nallow_uri = spiffe://t/a\n"
    )
    (web,) = parse(text).listeners
    assert web.client_ca == ("/etc/tunnel/ca.pem", "/other-ca.pem")  # every path, not the first
    assert web.verify == "required"
    assert web.crl == ("/etc/tunnel/a.crl", "/b.crl")
    assert web.allow_cn == ("alice", "bob")
    assert web.allow_dns == ("alice.example",)
    assert web.allow_uri == ("spiffe://t/a",)


def test_verify_needs_client_ca() -> None:
    (error,) = errors(BASE + "verify = optional\n")
    assert error.key == "verify"
    assert "client_ca" in str(error)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("client_ca = ca.pem\n", "client_ca"),
        ("client_ca = ca.pem\nverify = optional\nallow_cn = a\n", "allow_cn"),
        ("client_ca = ca.pem\nverify = maybe\n", "verify"),
    ],
)
def test_client_auth_combinations(extra: str, key: str) -> None:
    found = errors(BASE + extra)
    assert key in [e.key for e in found]


def test_ticket_key_file_is_inherited_and_resolved() -> None:
    (web,) = parse("[tunnel]\nticket_key_file = keys/t.key\n" + BASE).listeners
    assert web.ticket_key_file == "/etc/tunnel/keys/t.key"


def test_backend_tls_keys() -> None:
    text = (
        "[backend:s]\nconnect = 10.0.0.1:443\ntls = yes\nca = ca.pem\nsni = api.internal\n"
        "cert = c.pem\nkey = c.key\n\n"
        "[plain]\naccept = 127.0.0.1:1443\nclient = yes\nbackend = s\nkeylog_file = k.log\n"
    )
    config = parse(text)
    (backend,) = config.backends
    assert backend.tls is True
    assert backend.ca == "/etc/tunnel/ca.pem"
    assert backend.sni == "api.internal"
    assert (backend.cert, backend.key) == ("/etc/tunnel/c.pem", "/etc/tunnel/c.key")
    (plain,) = config.listeners
    assert plain.client is True
    assert plain.cert == ()
    assert plain.keylog_file == "/etc/tunnel/k.log"


@pytest.mark.parametrize(
    ("backend", "key"),
    [
        ("connect = 10.0.0.1:443\nca = ca.pem\n", "ca"),
        ("connect = 10.0.0.1:443\ntls = yes\nkey = k.pem\n", "key"),
        ("connect = unix:/run/s.sock\ntls = yes\n", "sni"),
        ("connect = 10.0.0.1:443\ntls = maybe\n", "tls"),
    ],
)
def test_backend_tls_errors(backend: str, key: str) -> None:
    found = errors(
        f"[backend:s]\n{backend}\n" + BASE.replace("connect = 127.0.0.1:1", "backend = s")
    )
    assert key in [e.key for e in found]


def test_client_mode_errors() -> None:
    text = (
        "[backend:s]\nconnect = 10.0.0.1:443\n\n"
        "[plain]\naccept = 127.0.0.1:1443\nclient = yes\nbackend = s\nalpn = h2\n"
    )
    keys = [e.key for e in errors(text)]
    assert keys.count("client") == 1
    assert "alpn" in keys
