"""Configuration values: one text value -> a typed value, or ``ConfigValueError`` (pure).

Each converter takes the text of one key and returns its value or raises
``ConfigValueError`` carrying a hint; :mod:`tunnel.config.parser` adds the file, section
and key. :mod:`tunnel.config.schema` says which converter reads which key.
Factories (``duration_range``, ``size_range``, ``integer_range``, ``one_of``,
``address_list``) build the converter for a key's allowed range. A converter that finds
several problems in one value raises :class:`ValueProblems`, so that each is reported.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable

from tunnel.config.model import Address, ConfigValueError, IPNetwork, SyslogAddress
from tunnel.config.routing import Route, RouteError, parse_routes

TLS_VERSIONS = ("1.2", "1.3")

_DURATION_HINT = "use e.g. 10s, 500ms, 2m"
_SIZE_HINT = "use e.g. 4096, 64k, 1m"
_ADDRESS_HINT = "use host:port, [ipv6]:port, *:port or unix:/path"
_MAX_DIGITS = 18
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

# --------------------------------------------------------------------------- value helpers

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_RE = re.compile(r"(\d+)\s*(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
LISTENER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CURVES_RE = re.compile(r"[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)*")
LIST_SPLIT_RE = re.compile(r"[\s,]+")
PATH_SPLIT_RE = re.compile(r"\s*[,\n]\s*")


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Parse ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"`` or a plain number of seconds.

    Returns seconds as a float; the value must be > 0 unless ``allow_zero`` is true.
    Raises ``ConfigValueError`` otherwise.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        raise ConfigValueError(f"{text!r} is not a duration", _DURATION_HINT)
    unit = (match.group(2) or "s").lower()
    seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigValueError(f"{text!r} must be greater than zero", _DURATION_HINT)
    return seconds


def parse_size(text: str) -> int:
    """Parse ``"4096"``, ``"64k"``, ``"1m"`` or ``"1g"`` (binary units, any case) into bytes.

    ``"64kb"`` and ``"64KiB"`` are accepted too. The size must be > 0; raises
    ``ConfigValueError`` otherwise.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        raise ConfigValueError(f"{text!r} is not a size", _SIZE_HINT)
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if size <= 0:
        raise ConfigValueError(f"{text!r} must be greater than zero", _SIZE_HINT)
    return size


def parse_address(text: str, *, listening: bool = False) -> Address:
    """Parse ``host:port``, ``[ipv6]:port``, ``*:port`` (all IPv4 interfaces) or ``unix:/path``.

    Ports must be 1..65535; an address to listen on (``listening``) may also say port 0:
    the kernel chooses a free port, and the start-up log names it. A Unix path is returned
    as written (no resolution). Raises ``ConfigValueError`` on bad input.
    """
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path or "\x00" in path:
            raise ConfigValueError(f"{text!r} has no socket path", "use unix:/path/to/socket")
        return Address("unix", path=path)
    host, sep, port_text = _split_host_port(text)
    if not sep or not host:
        raise ConfigValueError(f"{text!r} is not an address", _ADDRESS_HINT)
    port = _parse_port(port_text, text, lowest=0 if listening else 1)
    return Address("tcp", host=_parse_host(host, text), port=port)


def parse_syslog_address(text: str) -> SyslogAddress:
    """Parse ``/dev/log`` or ``unix:/path`` (a datagram socket) or ``udp:HOST:PORT``.

    Returns the socket path, or ``(host, port)`` for UDP. Raises ``ConfigValueError``.
    """
    text = text.strip()
    hint = "use /dev/log, unix:/path/to/socket or udp:HOST:PORT"
    if text.startswith("udp:"):
        try:
            address = parse_address(text[len("udp:") :])
        except ConfigValueError as exc:
            raise ConfigValueError(f"{text!r}: {exc.message}", hint) from None
        if address.kind != "tcp":
            raise ConfigValueError(f"{text!r} is not a UDP address", hint)
        return (address.host, address.port)
    path = text[len("unix:") :] if text.startswith("unix:") else text
    if not path.startswith("/") or "\x00" in path:
        raise ConfigValueError(f"{text!r} is not a syslog address", hint)
    return path


def _split_host_port(text: str) -> tuple[str, str, str]:
    if not text.startswith("["):
        return text.rpartition(":")
    close = text.find("]")
    if close != -1 and text[close + 1 :] == "":
        raise ConfigValueError(f"{text!r} has no port", "write e.g. [::1]:8443")
    if close == -1 or text[close + 1] != ":":
        return "", "", text
    return text[: close + 1], ":", text[close + 2 :]


def _parse_port(port_text: str, text: str, lowest: int) -> int:
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ConfigValueError(f"{text!r} has no valid port", f"ports are numbers {lowest}..65535")
    port = int(port_text)
    if not lowest <= port <= 65535:
        raise ConfigValueError(f"{text!r}: port {port} is out of range", f"use {lowest}..65535")
    return port


def _parse_host(host: str, text: str) -> str:
    if host == "*":
        return "0.0.0.0"
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ConfigValueError(
                f"{text!r}: {inner!r} is not an IPv6 address", "brackets are only for IPv6"
            ) from None
        return inner
    if ":" in host:
        raise ConfigValueError(f"{text!r}: IPv6 addresses need brackets", "write e.g. [::1]:8443")
    if not _is_hostname(host):
        raise ConfigValueError(f"{text!r}: {host!r} is not a valid host", _ADDRESS_HINT)
    return host


def _is_hostname(host: str) -> bool:
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return False
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


# --------------------------------------------------------------------------- key converters


def one_of(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ConfigValueError(f"{text!r} is not valid", f"use one of: {', '.join(options)}")
        return value

    return convert


def integer_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        value = text.strip()
        if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
            raise ConfigValueError(f"{text!r} is not a whole number", f"use {low}..{high}")
        number = int(value)
        if not low <= number <= high:
            raise ConfigValueError(f"{number} is out of range", f"use {low}..{high}")
        return number

    return convert


def duration_range(maximum: float, *, allow_zero: bool = False) -> Callable[[str], float]:
    def convert(text: str) -> float:
        seconds = parse_duration(text, allow_zero=allow_zero)
        if seconds > maximum:
            raise ConfigValueError(f"{text!r} is too long", f"the maximum is {maximum:g}s")
        return seconds

    return convert


def size_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        size = parse_size(text)
        if not low <= size <= high:
            raise ConfigValueError(
                f"{text!r} is out of range", f"use {_format_size(low)}..{_format_size(high)}"
            )
        return size

    return convert


def _format_size(size: int) -> str:
    for suffix, unit in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def workers_count(text: str) -> int:
    if text.strip().lower() == "auto":
        return 0
    try:
        return integer_range(1, 256)(text)
    except ConfigValueError as exc:
        raise ConfigValueError(exc.message, "use auto or 1..256") from None


def tls_version(text: str) -> str:
    value = text.strip().lower().removeprefix("tls").removeprefix("v").strip()
    if value in TLS_VERSIONS:
        return value
    if value in ("1", "1.0", "1.1") or value.startswith("ssl"):
        raise ConfigValueError(
            f"TLS version {text!r} is not supported",
            "TLS 1.0 and 1.1 are insecure; use 1.2 or 1.3",
        )
    raise ConfigValueError(f"{text!r} is not a TLS version", "use 1.2 or 1.3")


_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True}
_BOOLEANS.update({"no": False, "false": False, "off": False, "0": False})


def boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ConfigValueError(f"{text!r} is not yes or no", "use yes or no") from None


def passthrough(text: str) -> str:
    return text.strip()


def curves(text: str) -> str:
    value = text.strip()
    if not _CURVES_RE.fullmatch(value):
        raise ConfigValueError(
            f"{text!r} is not a curve list", "use names separated by ':', e.g. X25519:P-256"
        )
    return value


def tlv_type(text: str) -> int:
    value = text.strip().lower()
    if value in ("off", "no", "0"):
        return 0
    try:
        number = int(value, 0)
    except ValueError:
        number = -1
    if not 0xE0 <= number <= 0xEF:
        raise ConfigValueError(
            f"{text!r} is not a custom TLV type", "use off or 0xE0..0xEF (the custom range)"
        )
    return number


def networks(text: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for word in filter(None, LIST_SPLIT_RE.split(text.strip())):
        try:
            networks.append(ipaddress.ip_network(word, strict=True))
        except ValueError as exc:
            raise ConfigValueError(
                f"{word!r} is not a network: {exc}",
                "use address/prefix with the host bits zero, e.g. 10.0.0.0/8, ::1/128",
            ) from None
    return tuple(networks)


def admin_address(text: str) -> Address | None:
    if text.strip().lower() == "off":
        return None
    address = parse_address(text, listening=True)
    if address.kind != "tcp":
        raise ConfigValueError(f"cannot serve the admin endpoint on {text!r}", "use host:port")
    return address


def alpn_list(text: str) -> tuple[str, ...]:
    protocols = tuple(filter(None, LIST_SPLIT_RE.split(text.strip())))
    for proto in protocols:
        if not proto.isascii() or len(proto) > 255:
            raise ConfigValueError(f"{proto!r} is not an ALPN protocol name", "e.g. h2, http/1.1")
    if len(set(protocols)) != len(protocols):
        raise ConfigValueError("a protocol is listed twice", "list each protocol once")
    return protocols


class ValueProblems(ConfigValueError):
    """Several problems in one value (e.g. two bad addresses in one list), each reported."""

    def __init__(self, problems: list[ConfigValueError]) -> None:
        super().__init__(problems[0].message, problems[0].hint)
        self.problems = problems


def address_list(*, accept: bool) -> Callable[[str], tuple[Address, ...]]:
    """Addresses separated by commas or whitespace; ``accept`` takes TCP ones only."""

    def step(word: str, result: list[Address]) -> None:
        address = parse_address(word, listening=accept)
        _check_end(word, address, accept=accept)
        if address in result:
            raise ConfigValueError(f"{word!r} is listed twice", "remove one")
        result.append(address)

    return lambda text: collect_addresses(text, step)


def collect_addresses(text: str, step: Callable[[str, list[Address]], None]) -> tuple[Address, ...]:
    """Run ``step`` on each word of a list, which adds to the result; every bad word is
    reported (one ``ConfigValueError``, or ``ValueProblems`` for several)."""
    result: list[Address] = []
    problems: list[ConfigValueError] = []
    for word in filter(None, LIST_SPLIT_RE.split(text)):
        try:
            step(word, result)
        except ConfigValueError as exc:
            problems.append(exc)
    if problems:
        raise problems[0] if len(problems) == 1 else ValueProblems(problems)
    return tuple(result)


def _check_end(word: str, address: Address, *, accept: bool) -> None:
    if address.kind == "unix":
        check_unix_path(address.path)  # again once resolved: a relative path grows
    if accept and address.kind == "unix":
        raise ConfigValueError(
            f"cannot accept on {word!r}", "accept takes TCP addresses only: host:port"
        )
    if not accept and word.startswith("*:"):
        raise ConfigValueError(
            f"cannot connect to {word!r}", "'*' means all interfaces; give a backend host"
        )


def check_unix_path(path: str) -> None:
    """A Unix socket path must fit into ``sun_path``."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigValueError(
            f"unix socket path {path!r} is too long",
            f"use a path of at most {UNIX_PATH_MAX} bytes",
        )


def path_list(text: str) -> tuple[str, ...]:
    """File paths separated by commas or new lines (resolved by the parser afterwards)."""
    paths = PATH_SPLIT_RE.split(text.strip())
    if not any(paths):  # e.g. "client_ca = ,": separators only (found by fuzzing)
        raise ConfigValueError("has no file path", "give the path of a PEM file")
    if not all(paths):
        raise ConfigValueError("has an empty path", "separate PEM file paths with commas")
    return tuple(paths)


def words(text: str) -> tuple[str, ...]:
    """Names separated by commas or new lines (they may contain spaces)."""
    return tuple(w.strip() for w in re.split(r"[,\n]", text) if w.strip())


def lower_words(text: str) -> tuple[str, ...]:
    """Like :func:`words`, lower-cased (DNS names)."""
    return tuple(w.lower() for w in words(text))


def routes(text: str) -> tuple[Route, ...]:
    """SNI/ALPN route rules (see :func:`tunnel.config.routing.parse_routes`)."""
    try:
        rules = parse_routes(text)
    except RouteError as exc:
        raise ConfigValueError(exc.message, exc.hint) from None
    if not rules:
        raise ConfigValueError("has no rules", "add e.g. 'route = sni:api.example.com=api'")
    return rules
