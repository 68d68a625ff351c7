"""tls/expiry.py: the one threshold and wording of certificate-expiry warnings."""

from __future__ import annotations

import datetime

from tunnel.tls.expiry import EXPIRY_WARNING_DAYS, expiry_warning

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def at(days: float) -> datetime.datetime:
    return NOW + datetime.timedelta(days=days)


def test_no_warning_from_the_threshold_on() -> None:
    assert expiry_warning("web", "/c.pem", at(EXPIRY_WARNING_DAYS), NOW) is None
    assert expiry_warning("web", "/c.pem", at(400), NOW) is None


def test_warnings() -> None:
    soon = expiry_warning("web", "/c.pem", at(EXPIRY_WARNING_DAYS - 0.5), NOW)
    assert soon == "WARN [web] cert /c.pem: expires in 30 days (2030-01-30); renew it"
    gone = expiry_warning("api", "/o.pem", at(-3), NOW)
    assert gone == "WARN [api] cert /o.pem: EXPIRED on 2029-12-29; renew it"
