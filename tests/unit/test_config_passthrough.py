"""Config keys of SNI passthrough, JA4 and groups: passthrough, deny_ja4, proxy_*_tlv."""

from __future__ import annotations

import pytest

from tunnel.config import parse_config
from tunnel.errors import ConfigError, ConfigErrors

FILE = "/etc/tunnel/t.ini"
LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"
MAIL = "[backend:mail]\nconnect = 10.0.0.9:443\npassthrough = yes\n"
FP = "t13d1516h2_8daaf6152771_e5627efa2ab1"


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, FILE)
    return info.value.errors


def test_passthrough_backend_routed_by_sni() -> None:
    config = parse_config(MAIL + LISTENER + "route = sni:mail.example.com=mail\n", FILE)
    (backend,) = config.backends
    assert backend.passthrough and not backend.tls
    assert not parse_config(LISTENER, FILE).listeners[0].deny_ja4


def test_passthrough_with_tls_refused() -> None:
    (error,) = errors_of(MAIL + "tls = yes\n" + LISTENER)
    assert (error.section, error.key) == ("backend:mail", "tls")
    assert "passthrough" in error.message and error.hint


def test_passthrough_by_alpn_refused() -> None:
    (error,) = errors_of(MAIL + LISTENER + "route = alpn:h2=mail\n")
    assert (error.section, error.key) == ("web", "route")
    assert "sni:NAME=mail" in (error.hint or "")


def test_deny_ja4_and_tlv() -> None:
    other = "t12i0203h1_aaaaaaaaaaaa_000000000000"
    text = LISTENER + f"deny_ja4 = {FP},\n  {other}\nproxy_ja4_tlv = 0xE1\n"
    (web,) = parse_config(text, FILE).listeners
    assert web.deny_ja4 == (FP, "t12i0203h1_aaaaaaaaaaaa_000000000000")
    assert web.proxy_ja4_tlv == 0xE1 and web.proxy_group_tlv == 0
    grouped = parse_config(f"[tunnel]\nproxy_group_tlv = 0xE2\n{LISTENER}", FILE)
    assert grouped.listeners[0].proxy_group_tlv == 0xE2
    inherited = parse_config(f"[tunnel]\ndeny_ja4 = {FP}\n" + LISTENER, FILE)
    assert inherited.listeners[0].deny_ja4 == (FP,)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("deny_ja4 = t13d1516h2_8daaf6152771", "not a JA4 fingerprint"),
        ("deny_ja4 = T13D1516H2_8DAAF6152771_E5627EFA2AB1", "not a JA4 fingerprint"),
        ("proxy_ja4_tlv = 0x30", "custom TLV"),
        ("proxy_ja4_tlv = 0xE0\nproxy_cert_tlv = 0xE0", "both 0xE0"),
        ("proxy_group_tlv = 0x20", "custom TLV"),
        ("proxy_group_tlv = mlkem", "custom TLV"),
        ("proxy_group_tlv = 0xE1\nproxy_ja4_tlv = 0xE1", "proxy_group_tlv and proxy_ja4_tlv"),
        ("proxy_cert_tlv = 0xE5\nproxy_group_tlv = 0xE5", "proxy_group_tlv and proxy_cert_tlv"),
    ],
)
def test_bad_values(line: str, words: str) -> None:
    (error,) = errors_of(LISTENER + line + "\n")
    assert words in str(error) and error.hint and error.section == "web"
