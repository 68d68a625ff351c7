"""Backend pool values (pure): ``connect`` lists with weights and SRV names, DNS servers.

``connect = 10.0.0.1:8080 weight=3, 10.0.0.2:8080, srv:_app._tcp.example.com`` lists the
members of a backend pool: addresses as everywhere else, each optionally followed by
``weight=N`` (1..1000, default 1), and ``srv:NAME`` for the targets of the SRV records of
NAME (their priority, weight and port come from DNS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from tunnel.config.model import Address, ConfigValueError
from tunnel.config.values import (
    LIST_SPLIT_RE,
    _check_end,
    _is_hostname,
    collect_addresses,
    parse_address,
)

BALANCE_MODES = ("first", "round-robin", "least-connections")
HEALTH_CHECKS = ("off", "tcp", "tls")
MAX_WEIGHT = 1000
_WEIGHT_RE = re.compile(r"weight=(\d{1,6})", re.IGNORECASE | re.ASCII)
DNS_PORT = 53


def pool_addresses(text: str) -> tuple[Address, ...]:
    """Backend addresses, each optionally followed by ``weight=N``; ``srv:NAME`` entries."""
    return collect_addresses(text, _pool_step)


def _pool_step(word: str, result: list[Address]) -> None:
    weight = _WEIGHT_RE.fullmatch(word)
    if weight is not None:
        result[-1] = _weighted(result, int(weight.group(1)), word)
        return
    address = _member(word)
    if any(dataclasses.replace(a, weight=1) == address for a in result):
        raise ConfigValueError(f"{word!r} is listed twice", "remove one")
    result.append(address)


def _weighted(result: list[Address], weight: int, word: str) -> Address:
    if not result:
        raise ConfigValueError(f"{word!r} follows no address", "write e.g. 10.0.0.1:80 weight=3")
    if not 1 <= weight <= MAX_WEIGHT:
        raise ConfigValueError(f"{word!r} is out of range", f"use weight=1..{MAX_WEIGHT}")
    if result[-1].kind == "srv":
        raise ConfigValueError(f"{word!r}: an srv: entry has its weights in DNS", "remove it")
    return dataclasses.replace(result[-1], weight=weight)


def _member(word: str) -> Address:
    if word.lower().startswith("srv:"):
        name = word[4:].rstrip(".")
        if not name or not _is_hostname(name):
            raise ConfigValueError(
                f"{word!r} is not an SRV name", "write e.g. srv:_app._tcp.example.com"
            )
        return Address("srv", host=name)
    address = parse_address(word)
    _check_end(word, address, accept=False)
    return address


def resolver_list(text: str) -> tuple[Address, ...]:
    """DNS servers: ``IP`` or ``IP:PORT`` (``[IPv6]:PORT``), port 53 by default."""
    result = []
    for word in filter(None, LIST_SPLIT_RE.split(text)):
        try:
            ip = ipaddress.ip_address(word.strip("[]"))
        except ValueError:
            address = parse_address(word)
            try:
                ipaddress.ip_address(address.host)
            except ValueError:
                raise ConfigValueError(
                    f"{word!r} is not an IP address", "write e.g. 127.0.0.1:53 or [::1]"
                ) from None
        else:
            address = Address("tcp", host=str(ip), port=DNS_PORT)
        if address.kind != "tcp":
            raise ConfigValueError(f"{word!r} is not a DNS server", "write e.g. 127.0.0.1:53")
        result.append(address)
    return tuple(result)
