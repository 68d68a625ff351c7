"""The ``[acme]`` section and a listener's ``acme`` key: certificates Tunnel obtains itself.

Pure: the settings dataclass, the converters :mod:`tunnel.config.schema` declares for the
keys, and the checks across sections (names against [acme]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tunnel.config.model import ConfigValueError
from tunnel.config.values import parse_duration

SECTION = "acme"
CHALLENGES = ("tls-alpn-01", "http-01")
DEFAULT_STATE_DIR = "/var/lib/tunnel/acme"
_DAY = 86400.0
_DNS_NAME_RE = re.compile(
    r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_RENEW_HINT = "use a duration such as 30d or 12h, or a share of the lifetime such as 33%"


@dataclass(frozen=True, slots=True)
class RenewBefore:
    """When to renew: a fixed time before expiry, or a share of the certificate's lifetime."""

    seconds: float = 30 * _DAY
    fraction: float | None = None  # 0 < fraction < 1: renew when this share is left

    def margin(self, lifetime: float) -> float:
        """Seconds before expiry at which a certificate living ``lifetime`` seconds renews."""
        if self.fraction is not None:
            return lifetime * self.fraction
        return self.seconds


@dataclass(frozen=True, slots=True)
class AcmeSettings:
    """The ``[acme]`` section."""

    directory: str
    state_dir: str = DEFAULT_STATE_DIR
    email: str | None = None
    ca_file: str | None = None  # trust for the ACME server's own TLS (tests, private CAs)
    challenge: str = "tls-alpn-01"
    http_port: int = 80
    renew_before: RenewBefore = RenewBefore()


def parse_renew_before(text: str) -> RenewBefore:
    """``30d``/``12h``/``90s`` (before expiry) or ``33%`` (of the lifetime left)."""
    text = text.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ConfigValueError(f"{text!r} is not a percentage", _RENEW_HINT) from None
        if not 0 < share < 100:
            raise ConfigValueError(f"{text!r} must be between 0% and 100%", _RENEW_HINT)
        return RenewBefore(fraction=share / 100)
    if text[-1:].lower() == "d":
        try:
            days = float(text[:-1])
        except ValueError:
            raise ConfigValueError(f"{text!r} is not a duration", _RENEW_HINT) from None
        if days <= 0:
            raise ConfigValueError(f"{text!r} must be greater than zero", _RENEW_HINT)
        return RenewBefore(seconds=days * _DAY)
    try:
        return RenewBefore(seconds=parse_duration(text))
    except ConfigValueError:
        raise ConfigValueError(f"{text!r} is not a duration", _RENEW_HINT) from None


def parse_names(text: str) -> tuple[str, ...]:
    """A listener's ``acme`` value: DNS names, comma or space separated, lower-cased."""
    names: list[str] = []
    for word in filter(None, re.split(r"[\s,]+", text.strip().lower())):
        if word.startswith("*."):
            raise ConfigValueError(
                f"{word!r} is a wildcard", "wildcards need DNS-01, which Tunnel does not do"
            )
        if not _DNS_NAME_RE.fullmatch(word):
            raise ConfigValueError(f"{word!r} is not a DNS name", "use e.g. www.example.com")
        if word not in names:
            names.append(word)
    if not names:
        raise ConfigValueError("names no domain", "use e.g. 'acme = example.com, www.example.com'")
    return tuple(names)


def directory_url(text: str) -> str:
    from urllib.parse import urlsplit  # only for an [acme] directory URL

    url = urlsplit(text.strip())
    if url.scheme not in ("https", "http") or not url.netloc:
        raise ConfigValueError(
            f"{text.strip()!r} is not an http(s) URL",
            "use the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory",
        )
    return text.strip()


def email(text: str) -> str:
    if not _EMAIL_RE.fullmatch(text.strip()):
        raise ConfigValueError(f"{text.strip()!r} is not an e-mail address", "use e.g. ops@x.org")
    return text.strip()


def check_listener_names(
    listeners: Mapping[str, tuple[str, ...]], *, has_section: bool
) -> list[tuple[str, str, str]]:
    """Cross-section checks: (section, message, hint) for each problem."""
    problems: list[tuple[str, str, str]] = []
    owner: dict[str, tuple[str, tuple[str, ...]]] = {}
    for section, names in listeners.items():
        if not has_section:
            problems.append(
                (section, "acme needs an [acme] section", "add [acme] with a directory URL")
            )
        for name in names:
            first, first_names = owner.setdefault(name, (section, names))
            if first_names != names:
                # One certificate per name list: a name shared by listeners needs the same list.
                problems.append(
                    (section, f"{name} is in [{first}]'s acme list too", "use the same list")
                )
    return problems
