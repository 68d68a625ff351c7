"""The [acme] section, the listener's acme key and renewal timing (pure, no I/O)."""

from __future__ import annotations

import pytest

from tunnel.config import Config, parse_config
from tunnel.config.acme import RenewBefore, parse_renew_before
from tunnel.errors import ConfigErrors
from tunnel.tls.acme.renewal import MAX_RETRY, MIN_RETRY, Validity, renew_at, retry_delay

DAY = 86400.0


def config(
    acme: str = "directory = https://ca.test/dir\n", names: str = "a.test, b.test"
) -> Config:
    listener = f"[web]\naccept = 127.0.0.1:8443\nacme = {names}\nconnect = 127.0.0.1:80\n"
    text = f"[acme]\n{acme}\n{listener}"
    return parse_config(text, "/etc/tunnel/t.ini")


def errors(**kwargs: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        config(**kwargs)
    return [str(e) for e in info.value.errors]


def test_a_listener_with_acme_needs_no_cert_and_gets_the_state_dir() -> None:
    parsed = config("directory = https://ca.test/dir\nstate_dir = acme\nrenew_before = 20d\n")
    (web,) = parsed.listeners
    assert web.cert == () and web.acme == ("a.test", "b.test")
    assert web.acme_state_dir == "/etc/tunnel/acme"
    assert parsed.acme is not None
    assert parsed.acme.renew_before == RenewBefore(seconds=20 * DAY)
    assert parsed.acme.challenge == "tls-alpn-01" and parsed.acme.http_port == 80


@pytest.mark.parametrize(
    ("acme", "names", "expected"),
    [
        ("email = x@y.org\n", "a.test", "[acme] directory: required key is missing"),
        ("directory = ftp://x\n", "a.test", "[acme] directory: 'ftp://x' is not an http(s) URL"),
        (
            "directory = https://c/d\nchallenge = dns-01\n",
            "a.test",
            "'dns-01' is not valid",
        ),
        (
            "directory = https://c/d\nhttp_port = 0\n",
            "a.test",
            "http_port: 0 is out",
        ),
        ("directory = https://c/d\nrenew_before = 1w\n", "a.test", "renew_before: '1w'"),
        ("directory = https://c/d\nstate = x\n", "a.test", "unknown key 'state'"),
        ("directory = https://c/d\n", "*.a.test", "[web] acme: '*.a.test' is a wildcard"),
        ("directory = https://c/d\n", "a..test", "is not a DNS name"),
    ],
)
def test_bad_values_name_section_and_key(acme: str, names: str, expected: str) -> None:
    assert any(expected in e for e in errors(acme=acme, names=names))


def test_acme_names_without_the_section_are_an_error() -> None:
    text = "[web]\naccept = 127.0.0.1:8443\nacme = a.test\nconnect = 127.0.0.1:80\n"
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "t.ini")
    assert "[web] acme: acme needs an [acme] section" in str(info.value.errors[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", RenewBefore(seconds=30 * DAY)),
        ("12h", RenewBefore(seconds=12 * 3600.0)),
        ("90s", RenewBefore(seconds=90.0)),
        ("33%", RenewBefore(fraction=0.33)),
    ],
)
def test_renew_before_forms(text: str, expected: RenewBefore) -> None:
    assert parse_renew_before(text) == expected


def test_renewal_time_by_duration_share_and_short_lifetime() -> None:
    ninety_days = Validity(0.0, 90 * DAY)
    assert renew_at(None, RenewBefore()) == 0.0  # no certificate: now
    assert renew_at(ninety_days, RenewBefore(seconds=30 * DAY)) == 60 * DAY
    assert renew_at(ninety_days, RenewBefore(fraction=0.5)) == 45 * DAY
    six_days = Validity(0.0, 6 * DAY)
    assert renew_at(six_days, RenewBefore(seconds=30 * DAY)) == 4 * DAY  # a third left


def test_retry_backs_off_and_honours_retry_after() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [MIN_RETRY, 2 * MIN_RETRY, 4 * MIN_RETRY]
    assert retry_delay(100) == MAX_RETRY
    assert retry_delay(1, retry_after=600.0) == 600.0
