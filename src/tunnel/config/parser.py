"""Configuration: .ini text -> frozen dataclasses.

Public API:

- ``parse_config(text, path="<config>", *, base_dir=None) -> Config`` parses a whole file and
  raises ``ConfigErrors`` listing *every* problem at once (each a ``ConfigError`` naming file,
  section, key and a hint). It never raises anything else and does no I/O: relative ``cert``,
  ``key`` and ``unix:`` paths are resolved against ``base_dir`` (default: the directory part of
  ``path``) by string work only, after ``~`` expansion.
- ``load_config(path) -> Config`` reads the file as UTF-8 (an unreadable file is a
  ``ConfigErrors`` with one ``ConfigError``) and calls ``parse_config`` with the file's
  absolute directory as ``base_dir``.
- ``parse_duration("30s") -> 30.0``, ``parse_size("64k") -> 65536``,
  ``parse_address("host:port" | "[v6]:port" | "*:port" | "unix:/path") -> Address``; each
  raises ``ConfigValueError`` (a ``ValueError`` carrying a ``hint``) on bad input.
- ``TUNNEL_KEYS``, ``LISTENER_KEYS`` and ``INHERITABLE_KEYS`` are the accepted key names of
  the ``[tunnel]`` section, of listener sections, and the listener keys ``[tunnel]`` may set
  as defaults for every listener.

The dataclasses live in :mod:`tunnel.config.model` and the single-value converters in
:mod:`tunnel.config.values`; the package :mod:`tunnel.config` re-exports them and this
module's API, the one place the rest imports.

File layout: an optional ``[tunnel]`` section (process settings plus listener defaults) and one
section per listener, named by the section name.
"""

from __future__ import annotations

import ast
import configparser
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tunnel.config import values
from tunnel.config.model import Address as Address
from tunnel.config.model import AddressKind as AddressKind
from tunnel.config.model import BackendConfig as BackendConfig
from tunnel.config.model import Config as Config
from tunnel.config.model import ConfigValueError as ConfigValueError
from tunnel.config.model import IPNetwork as IPNetwork
from tunnel.config.model import ListenerConfig as ListenerConfig
from tunnel.config.model import SyslogAddress as SyslogAddress
from tunnel.config.model import TunnelSettings as TunnelSettings
from tunnel.config.routing import RouteError, parse_routes
from tunnel.config.values import TLS_VERSIONS as TLS_VERSIONS
from tunnel.config.values import parse_address as parse_address
from tunnel.config.values import parse_duration as parse_duration
from tunnel.config.values import parse_size as parse_size
from tunnel.config.values import parse_syslog_address as parse_syslog_address
from tunnel.errors import ConfigError, ConfigErrors

TUNNEL_SECTION = "tunnel"

# Listener keys that [tunnel] may set as defaults for every listener.
INHERITABLE_KEYS: frozenset[str] = frozenset(
    {
        "tls_min",
        "tls_max",
        "ciphers",
        "ciphersuites",
        "curves",
        "handshake_timeout",
        "connect_timeout",
        "idle_timeout",
        "buffer_size",
        "backlog",
        "proxy_protocol",
        "proxy_crc32c",
        "proxy_unique_id",
        "proxy_cert_tlv",
        "proxy_keep_tlvs",
        "proxy_from",
        "proxy_timeout",
        "sni_strict",
        "alpn",
        "ticket_key_file",
        "max_connections_per_ip",
        "max_handshakes_per_ip",
    }
)
_PROCESS_KEYS: frozenset[str] = frozenset(
    {
        "workers",
        "log_level",
        "log_target",
        "log_facility",
        "max_connections",
        "drain_timeout",
        "log_file",
        "watch",
        "pid_file",
        "log_format",
        "admin",
        "daemon",
        "user",
        "group",
        "allow_root",
        "shutdown_delay",
        "log_syslog_address",
    }
)
# [tunnel] keys holding file paths (resolved like cert paths).
_PATH_KEYS = ("log_file", "pid_file")
TUNNEL_KEYS: frozenset[str] = _PROCESS_KEYS | INHERITABLE_KEYS
LISTENER_KEYS: frozenset[str] = INHERITABLE_KEYS | {
    "accept",
    "cert",
    "key",
    "connect",
    "max_connections",
    "cert_dir",
    "backend",
    "route",
    "client_ca",
    "verify",
    "crl",
    "allow_cn",
    "allow_dns",
    "allow_uri",
    "client",
    "keylog_file",
}
VERIFY_MODES = ("none", "optional", "required")
BACKEND_PREFIX = "backend:"
BACKEND_KEYS: frozenset[str] = frozenset(
    {
        "connect",
        "connect_timeout",
        "proxy_protocol",
        "tls",
        "ca",
        "sni",
        "cert",
        "key",
        "keylog_file",
    }
)

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_TARGETS = ("stderr", "syslog", "file")
LOG_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    *(f"local{i}" for i in range(8)),
)
PROXY_PROTOCOLS = ("off", "v1", "v2")
LOG_FORMATS = ("text", "json")

_MAX_CONNECTIONS = values.integer_range(1, 10_000_000)

_INHERITABLE_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "tls_min": values.tls_version,
    "tls_max": values.tls_version,
    "ciphers": values.passthrough,
    "ciphersuites": values.passthrough,
    "curves": values.curves,
    "handshake_timeout": values.duration_range(300.0),
    "connect_timeout": values.duration_range(300.0),
    "idle_timeout": values.duration_range(7 * 86400.0),
    "buffer_size": values.size_range(4 << 10, 16 << 20),
    "backlog": values.integer_range(1, 65535),
    "proxy_protocol": values.one_of(PROXY_PROTOCOLS),
    "proxy_crc32c": values.boolean,
    "proxy_unique_id": values.boolean,
    "proxy_cert_tlv": values.tlv_type,
    "proxy_keep_tlvs": values.boolean,
    "proxy_from": values.networks,
    "proxy_timeout": values.duration_range(300.0),
    "sni_strict": values.boolean,
    "alpn": values.alpn_list,
    "ticket_key_file": values.passthrough,  # resolved against the file's directory afterwards
    "max_connections_per_ip": values.integer_range(0, 10_000_000),
    "max_handshakes_per_ip": values.integer_range(0, 10_000_000),
}
_PROCESS_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "workers": values.workers_count,
    "log_level": values.one_of(LOG_LEVELS),
    "log_target": values.one_of(LOG_TARGETS),
    "log_facility": values.one_of(LOG_FACILITIES),
    "max_connections": _MAX_CONNECTIONS,
    "drain_timeout": values.duration_range(3600.0, allow_zero=True),
    "log_file": values.passthrough,
    "watch": values.boolean,
    "pid_file": values.passthrough,
    "log_format": values.one_of(LOG_FORMATS),
    "admin": values.admin_address,
    "daemon": values.boolean,
    "user": values.passthrough,
    "group": values.passthrough,
    "allow_root": values.boolean,
    "shutdown_delay": values.duration_range(600.0, allow_zero=True),
    "log_syslog_address": parse_syslog_address,
}

# --------------------------------------------------------------------------- parsing context


@dataclass(slots=True)
class _Context:
    """Collects errors while parsing one file and resolves relative paths."""

    file: str
    base_dir: str | None
    errors: list[ConfigError] = field(default_factory=list)
    accept_owner: dict[Address, str] = field(default_factory=dict)

    def error(
        self, message: str, section: str | None = None, key: str | None = None, hint: str = ""
    ) -> None:
        self.errors.append(
            ConfigError(message, file=self.file, section=section, key=key, hint=hint or None)
        )

    def value_error(self, exc: ConfigValueError, section: str, key: str) -> None:
        self.error(exc.message, section, key, exc.hint or "")

    def resolve(self, path: str) -> str:
        path = os.path.expanduser(path)
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))


def _default_base_dir(path: str) -> str | None:
    if path.startswith("<") and path.endswith(">"):
        return None
    return os.path.dirname(path)


# --------------------------------------------------------------------------- ini reading


def _read_ini(text: str, ctx: _Context) -> configparser.RawConfigParser | None:
    """Run configparser, turning every syntax problem into a ConfigError."""
    parser = _new_parser(strict=True)
    try:
        parser.read_string(text, source=ctx.file)
    except configparser.MissingSectionHeaderError as exc:
        ctx.error(
            f"line {exc.lineno}: {_shorten(exc.line)} is outside any section",
            hint="start the file with a section header such as [tunnel] or [web]",
        )
        return None
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
        _report_duplicate(exc, ctx)
        return _read_lenient(text, ctx)
    except configparser.ParsingError as exc:
        _report_parsing_error(exc, ctx)
    except configparser.Error as exc:  # pragma: no cover - defensive, configparser internals
        ctx.error(f"cannot parse the file: {exc.message}", hint="check the file's syntax")
        return None
    return parser


def _read_lenient(text: str, ctx: _Context) -> configparser.RawConfigParser | None:
    """Re-read after a duplicate so that the remaining problems are reported too."""
    parser = _new_parser(strict=False)
    try:
        parser.read_string(text, source=ctx.file)
    except configparser.ParsingError as exc:
        _report_parsing_error(exc, ctx)
    except configparser.Error:  # pragma: no cover - the strict pass already reported it
        return None
    return parser


def _new_parser(*, strict: bool) -> configparser.RawConfigParser:
    # A default section name that can never appear as a header: [DEFAULT] is an ordinary
    # (rejected) section, and no keys leak from it into every other section.
    return configparser.RawConfigParser(
        strict=strict,
        interpolation=None,
        inline_comment_prefixes=("#", ";"),
        default_section="\n",
    )


def _report_duplicate(
    exc: configparser.DuplicateSectionError | configparser.DuplicateOptionError, ctx: _Context
) -> None:
    if isinstance(exc, configparser.DuplicateOptionError):
        ctx.error(
            f"line {exc.lineno}: key {exc.option!r} is set twice",
            exc.section,
            exc.option,
            "keep only one of the lines",
        )
    else:
        ctx.error(
            f"line {exc.lineno}: section [{exc.section}] appears twice",
            exc.section,
            hint="merge the two sections or rename one",
        )


def _report_parsing_error(exc: configparser.ParsingError, ctx: _Context) -> None:
    for lineno, line in exc.errors:
        ctx.error(
            f"line {lineno}: cannot parse {_shorten(_unrepr(line))}",
            hint="lines must be '[section]', 'key = value' or comments starting with # or ;",
        )


def _unrepr(line: object) -> str:
    """configparser stores bad lines as repr() strings; undo that for the message."""
    text = str(line)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, str) else text


def _shorten(line: str, limit: int = 60) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")


# --------------------------------------------------------------------------- sections


def _check_keys(
    section: str, keys: list[str], allowed: frozenset[str], other: frozenset[str], ctx: _Context
) -> None:
    """Report keys not in ``allowed``, with a did-you-mean hint."""
    for key in keys:
        if key in allowed:
            continue
        if key in other:
            where = "[tunnel]" if section != TUNNEL_SECTION else "a listener section"
            hint = f"{key!r} belongs in {where}"
        else:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else _known_keys_hint(allowed)
        ctx.error(f"unknown key {key!r}", section, key, hint)


def _known_keys_hint(allowed: frozenset[str]) -> str:
    return "known keys: " + ", ".join(sorted(allowed))


def _convert_keys(
    section: str,
    items: Mapping[str, str],
    converters: Mapping[str, Callable[[str], Any]],
    ctx: _Context,
) -> dict[str, Any]:
    """Convert every present key that has a converter; report bad or empty values."""
    values: dict[str, Any] = {}
    for key, convert in converters.items():
        text = items.get(key)
        if text is None:
            continue
        if not text.strip():
            ctx.error("has no value", section, key, "give a value or delete the line")
            continue
        try:
            values[key] = convert(text)
        except ConfigValueError as exc:
            ctx.value_error(exc, section, key)
    return values


def _parse_tunnel(items: Mapping[str, str], ctx: _Context) -> tuple[TunnelSettings, dict[str, Any]]:
    """Parse [tunnel]: returns the process settings and the listener defaults."""
    _check_keys(TUNNEL_SECTION, list(items), TUNNEL_KEYS, LISTENER_KEYS - TUNNEL_KEYS, ctx)
    values = _convert_keys(TUNNEL_SECTION, items, _PROCESS_CONVERTERS, ctx)
    for key in _PATH_KEYS:
        if key in values:
            values[key] = ctx.resolve(values[key])
    _check_log_file(values, ctx)
    settings = TunnelSettings(**values)
    defaults = _convert_keys(TUNNEL_SECTION, items, _INHERITABLE_CONVERTERS, ctx)
    _check_tls_range(TUNNEL_SECTION, defaults, ctx)
    return settings, defaults


def _check_log_file(values: Mapping[str, Any], ctx: _Context) -> None:
    target = values.get("log_target", "stderr")
    if target == "file" and "log_file" not in values:
        ctx.error(
            "log_target = file needs a log_file",
            TUNNEL_SECTION,
            "log_file",
            "add e.g. 'log_file = /var/log/tunnel.log'",
        )
    elif target != "file" and "log_file" in values:
        ctx.error(
            f"log_file is only used with log_target = file (log_target is {target})",
            TUNNEL_SECTION,
            "log_target",
            "set 'log_target = file' or delete the log_file line",
        )
    if target != "syslog" and "log_syslog_address" in values:
        ctx.error(
            f"log_syslog_address is only used with log_target = syslog (log_target is {target})",
            TUNNEL_SECTION,
            "log_target",
            "set 'log_target = syslog' or delete the log_syslog_address line",
        )


def _check_tls_range(section: str, values: Mapping[str, Any], ctx: _Context) -> None:
    low = values.get("tls_min", TLS_VERSIONS[0])
    high = values.get("tls_max", TLS_VERSIONS[-1])
    if TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        ctx.error(
            f"tls_min {low} is newer than tls_max {high}",
            section,
            "tls_min",
            "tls_min must be lower than or equal to tls_max",
        )


def _check_listener_name(name: str, ctx: _Context) -> bool:
    if ":" in name:
        kind = name.split(":", 1)[0]
        ctx.error(
            f"section type {kind!r} is not supported yet",
            name,
            hint="every section except [tunnel] is a listener; name it like [web]",
        )
        return False
    if name.lower() in ("default", TUNNEL_SECTION):
        ctx.error(
            f"[{name}] is not a listener and not the [tunnel] section (names are case-sensitive)",
            name,
            hint="write [tunnel] in lower case for process settings and listener defaults",
        )
        return False
    if not values.LISTENER_NAME_RE.fullmatch(name):
        ctx.error(
            f"invalid listener name {name!r}",
            name,
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
        return False
    return True


def _parse_addresses(
    section: str, key: str, text: str, ctx: _Context, *, accept: bool
) -> tuple[Address, ...]:
    result: list[Address] = []
    for word in filter(None, values.LIST_SPLIT_RE.split(text)):
        try:
            address = parse_address(word)
        except ConfigValueError as exc:
            ctx.value_error(exc, section, key)
            continue
        problem = _address_problem(word, address, accept=accept)
        if problem:
            ctx.error(problem[0], section, key, problem[1])
            continue
        if address.kind == "unix":
            address = Address("unix", path=ctx.resolve(address.path))
            if len(os.fsencode(address.path)) > values.UNIX_PATH_MAX:
                ctx.error(
                    f"unix socket path {address.path!r} is too long",
                    section,
                    key,
                    f"use a path of at most {values.UNIX_PATH_MAX} bytes",
                )
                continue
        if address in result:
            ctx.error(f"{word!r} is listed twice", section, key, "remove one")
            continue
        if accept and not _claim(address, section, ctx):
            continue
        result.append(address)
    return tuple(result)


def _claim(address: Address, section: str, ctx: _Context) -> bool:
    """Register an accept address; report it if another listener already has it."""
    owner = ctx.accept_owner.setdefault(address, section)
    if owner != section:
        ctx.error(
            f"{address} is already accepted by [{owner}]",
            section,
            "accept",
            "each address can be used by one listener only",
        )
    return owner == section


def _address_problem(word: str, address: Address, *, accept: bool) -> tuple[str, str] | None:
    if accept and address.kind == "unix":
        return f"cannot accept on {word!r}", "accept takes TCP addresses only: host:port"
    if not accept and word.startswith("*:"):
        return f"cannot connect to {word!r}", "'*' means all interfaces; give a backend host"
    return None


def _parse_cert(section: str, text: str, ctx: _Context) -> tuple[str, ...]:
    if not text.strip():
        return ()  # reported as a missing required key
    paths = values.PATH_SPLIT_RE.split(text.strip())
    if not all(paths):
        ctx.error("has an empty path", section, "cert", "separate PEM file paths with commas")
        return ()
    return tuple(ctx.resolve(p) for p in paths)


def _parse_listener(
    name: str,
    items: Mapping[str, str],
    defaults: Mapping[str, Any],
    settings: TunnelSettings,
    ctx: _Context,
) -> ListenerConfig | None:
    """Parse one listener section; None when it has errors (already reported)."""
    before = len(ctx.errors)
    if not _check_listener_name(name, ctx):
        return None
    _check_keys(name, list(items), LISTENER_KEYS, TUNNEL_KEYS - LISTENER_KEYS, ctx)
    converters = {**_INHERITABLE_CONVERTERS, "max_connections": _MAX_CONNECTIONS}
    options = {"max_connections": settings.max_connections, **defaults}
    options.update(_convert_keys(name, items, converters, ctx))
    if "tls_min" in items or "tls_max" in items:
        _check_tls_range(name, options, ctx)
    options.update(_parse_routing_keys(name, items, ctx))
    options.update(_parse_client_auth(name, items, ctx))
    options.update(_convert_keys(name, items, _CLIENT_MODE_CONVERTERS, ctx))
    if options.get("keylog_file"):
        options["keylog_file"] = ctx.resolve(options["keylog_file"])
    if options.get("ticket_key_file"):
        options["ticket_key_file"] = ctx.resolve(options["ticket_key_file"])
    required = _parse_required(name, items, ctx)
    if len(ctx.errors) > before or required is None:
        return None
    accept, cert, key, connect = required
    return ListenerConfig(name, accept, cert, key, connect, **options)


def _parse_routing_keys(name: str, items: Mapping[str, str], ctx: _Context) -> dict[str, Any]:
    """cert_dir, backend and route (their targets are checked once all sections are read)."""
    options: dict[str, Any] = {}
    for key in ("cert_dir", "backend"):
        text = items.get(key)
        if text is not None and not text.strip():
            ctx.error("has no value", name, key, "give a value or delete the line")
        elif text is not None:
            options[key] = ctx.resolve(text.strip()) if key == "cert_dir" else text.strip()
    text = items.get("route")
    if text is not None:
        try:
            options["routes"] = parse_routes(text)
        except RouteError as exc:
            ctx.error(exc.message, name, "route", exc.hint or "")
            return options
        if not options["routes"]:
            ctx.error("has no rules", name, "route", "add e.g. 'route = sni:api.example.com=api'")
    return options


def _parse_client_auth(name: str, items: Mapping[str, str], ctx: _Context) -> dict[str, Any]:
    """client_ca, verify, crl and the allow_* lists (client certificates, mTLS)."""
    options: dict[str, Any] = {}
    for key, value in _convert_keys(name, items, _CLIENT_AUTH_CONVERTERS, ctx).items():
        if key in ("client_ca", "crl"):
            paths = tuple(ctx.resolve(p) for p in values.PATH_SPLIT_RE.split(value) if p)
            if not paths:  # e.g. "client_ca = ,": separators only (found by fuzzing)
                ctx.error("has no file path", name, key, "give the path of a PEM file")
                continue
            value = paths[0] if key == "client_ca" else paths
        options[key] = value
    verify = options.get("verify", "none")
    if verify != "none" and "client_ca" not in options:
        ctx.error(
            f"verify = {verify} needs client_ca",
            name,
            "verify",
            "set 'client_ca' to the PEM file of the CA(s) that issue client certificates",
        )
    for key in ("client_ca", "crl", "allow_cn", "allow_dns", "allow_uri"):
        needs = ("required",) if key.startswith("allow") else ("optional", "required")
        if key in options and verify not in needs:
            ctx.error(
                f"{key} needs verify = {' or '.join(needs)}",
                name,
                key,
                f"set 'verify = required' or delete '{key}'",
            )
    return options


def _word_list(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in re.split(r"[,\n]", text) if w.strip())


_CLIENT_AUTH_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "client_ca": values.passthrough,
    "verify": values.one_of(VERIFY_MODES),
    "crl": values.passthrough,
    "allow_cn": _word_list,
    "allow_dns": lambda text: tuple(w.lower() for w in _word_list(text)),
    "allow_uri": _word_list,
}


_Required = tuple[tuple[Address, ...], tuple[str, ...], str | None, tuple[Address, ...]]


_REQUIRED_EXAMPLES = (
    ("accept", "127.0.0.1:8443"),
    ("cert", "/etc/tunnel/site.pem"),
    ("connect", "127.0.0.1:8080"),
)
# A required key may be replaced by another: cert by cert_dir, connect by backend.
_ALTERNATIVES = {"cert": "cert_dir", "connect": "backend"}


def _require(name: str, items: Mapping[str, str], key: str, example: str, ctx: _Context) -> bool:
    """Report a missing or empty required key; True if it has a value."""
    if items.get(key, "").strip():
        return True
    alternative = _ALTERNATIVES.get(key)
    if alternative and key not in items and alternative in items:
        return True
    what = "missing" if key not in items else "empty"
    hint = f"add e.g. '{key} = {example}'"
    if alternative:
        hint += f" or set '{alternative}'"
    ctx.error(f"required key is {what}", name, key, hint)
    return False


def _parse_required(name: str, items: Mapping[str, str], ctx: _Context) -> _Required | None:
    """Parse accept, cert, key and connect; None if one of them is missing or empty."""
    plaintext = items.get("client", "").strip().lower() in ("yes", "true", "on", "1")
    present = [
        _require(name, items, key, example, ctx)
        for key, example in _REQUIRED_EXAMPLES
        if not (plaintext and key == "cert")  # client mode serves no certificate
    ]
    accept = _parse_addresses(name, "accept", items.get("accept", ""), ctx, accept=True)
    connect = _parse_addresses(name, "connect", items.get("connect", ""), ctx, accept=False)
    if connect and "backend" in items:
        ctx.error("connect and backend are both set", name, "backend", "keep only one of them")
    cert = _parse_cert(name, items["cert"], ctx) if "cert" in items else ()
    key_path = _parse_key(name, items, cert, ctx)
    if not all(present):
        return None
    return accept, cert, key_path, connect


def _parse_backend(
    section: str, items: Mapping[str, str], defaults: Mapping[str, Any], ctx: _Context
) -> BackendConfig | None:
    """Parse one ``[backend:NAME]`` section; None when it has errors (already reported)."""
    before = len(ctx.errors)
    name = section[len(BACKEND_PREFIX) :].strip()
    if not values.LISTENER_NAME_RE.fullmatch(name):
        ctx.error(
            f"invalid backend name {name!r}",
            section,
            hint="write [backend:NAME] with letters, digits, '-', '_' and '.'",
        )
    _check_keys(section, list(items), BACKEND_KEYS, LISTENER_KEYS - BACKEND_KEYS, ctx)
    converters = {k: _INHERITABLE_CONVERTERS[k] for k in ("connect_timeout", "proxy_protocol")}
    options = {k: v for k, v in defaults.items() if k in converters}
    options.update(_convert_keys(section, items, converters, ctx))
    options.update(_convert_keys(section, items, _BACKEND_TLS_CONVERTERS, ctx))
    for key in ("ca", "cert", "key", "keylog_file"):
        if key in options:
            options[key] = ctx.resolve(options[key])
    tls_keys = sorted(k for k in ("ca", "sni", "cert", "key", "keylog_file") if k in options)
    if tls_keys and not options.get("tls"):
        ctx.error(f"{tls_keys[0]} needs tls = yes", section, tls_keys[0], "add 'tls = yes'")
    if "key" in options and "cert" not in options:
        ctx.error("key without cert", section, "key", "set 'cert' to the client certificate")
    _require(section, items, "connect", "127.0.0.1:8080", ctx)
    connect = _parse_addresses(section, "connect", items.get("connect", ""), ctx, accept=False)
    unix = any(address.kind == "unix" for address in connect)
    if options.get("tls") and unix and "sni" not in options:
        ctx.error(
            "a TLS backend on a unix: socket needs sni",
            section,
            "sni",
            "set 'sni' to the name in the backend's certificate",
        )
    if len(ctx.errors) > before:
        return None
    return BackendConfig(name, connect, **options)


_BACKEND_TLS_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "tls": values.boolean,
    "ca": values.passthrough,
    "sni": values.passthrough,
    "cert": values.passthrough,
    "key": values.passthrough,
    "keylog_file": values.passthrough,
}
_CLIENT_MODE_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "client": values.boolean,
    "keylog_file": values.passthrough,
}


def _check_client_mode(listener: ListenerConfig, tls_backends: set[str], ctx: _Context) -> None:
    """client = yes: plaintext in, so the backend must speak TLS (and no TLS options apply)."""
    if not listener.client:
        return
    if listener.backend not in tls_backends or listener.routes:
        ctx.error(
            "client = yes needs 'backend = NAME' of a [backend:NAME] with tls = yes (no route)",
            listener.name,
            "client",
            "add e.g. [backend:remote] with connect, tls = yes, and set 'backend = remote'",
        )
    for key in ("cert", "cert_dir", "alpn", "client_ca"):
        if getattr(listener, key):
            ctx.error(
                f"{key} has no effect with client = yes (clients connect in plaintext)",
                listener.name,
                key,
                f"delete '{key}'; set TLS options of the connection in the [backend:NAME]",
            )


def _check_references(
    listeners: list[ListenerConfig], backends: list[BackendConfig], ctx: _Context
) -> None:
    """Every backend a listener names must exist (with a did-you-mean otherwise)."""
    known = sorted(b.name for b in backends)
    tls_backends = {b.name for b in backends if b.tls}
    for listener in listeners:
        _check_client_mode(listener, tls_backends, ctx)
        wanted = [("backend", listener.backend)] if listener.backend else []
        wanted += [("route", route.target) for route in listener.routes]
        for key, target in wanted:
            if target is None or target in known:
                continue
            close = difflib.get_close_matches(target, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"add a [backend:{target}] section with a connect key"
            )
            ctx.error(f"unknown backend {target!r}", listener.name, key, hint)


def _parse_key(
    name: str, items: Mapping[str, str], cert: tuple[str, ...], ctx: _Context
) -> str | None:
    text = items.get("key")
    if text is None:
        return None
    if not text.strip():
        ctx.error("has no value", name, "key", "give a path or delete the line")
        return None
    if len(cert) > 1:
        ctx.error(
            "one key cannot serve several certificates",
            name,
            "key",
            "delete the key line and put each key into its cert file (combined PEM)",
        )
        return None
    return ctx.resolve(text.strip())


# --------------------------------------------------------------------------- public entry points


def parse_config(text: str, path: str = "<config>", *, base_dir: str | None = None) -> Config:
    """Parse configuration ``text`` (named ``path`` in errors) into a ``Config``.

    Relative ``cert``/``key``/``unix:`` paths are resolved against ``base_dir`` (default: the
    directory of ``path``; no resolution when ``path`` looks like ``<name>``), after ``~``
    expansion. Raises ``ConfigErrors`` listing every problem; never raises anything else.
    """
    ctx = _Context(path, base_dir if base_dir is not None else _default_base_dir(path))
    parser = _read_ini(text.removeprefix("\ufeff"), ctx)
    if parser is None:
        raise ConfigErrors(ctx.errors)
    sections = {name: _section_items(parser, name, ctx) for name in parser.sections()}
    settings, defaults = _parse_tunnel(sections.pop(TUNNEL_SECTION, {}), ctx)
    listeners = []
    backends = []
    for name, items in sections.items():
        if name.startswith(BACKEND_PREFIX):
            backend = _parse_backend(name, items, defaults, ctx)
            if backend is not None:
                backends.append(backend)
            continue
        listener = _parse_listener(name, items, defaults, settings, ctx)
        if listener is not None:
            listeners.append(listener)
    _check_references(listeners, backends, ctx)
    if not listeners and not ctx.errors:
        ctx.error(
            "no listener is configured", hint="add a listener section with accept/cert/connect"
        )
    if ctx.errors:
        raise ConfigErrors(ctx.errors)
    return Config(path=path, tunnel=settings, listeners=tuple(listeners), backends=tuple(backends))


def _section_items(
    parser: configparser.RawConfigParser, name: str, ctx: _Context
) -> dict[str, str]:
    items = {}
    for key, value in parser.items(name, raw=True):
        if value and "\0" in value:
            # No setting can hold a NUL byte, and path functions raise ValueError on one
            # (found by fuzzing: keylog_file = ~<NUL>).
            ctx.error("contains a NUL byte", name, key, "remove it (is the file binary?)")
            continue
        items[key] = value or ""
    return items


def load_config(path: str) -> Config:
    """Read the UTF-8 file at ``path`` and parse it with ``parse_config``.

    Relative paths inside are resolved against the file's directory. A missing, unreadable or
    non-UTF-8 file raises ``ConfigErrors`` with one ``ConfigError`` naming the file.
    """
    try:
        with open(path, encoding="utf-8-sig") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise _file_error(path, "file not found", "check the path or create the file") from None
    except UnicodeDecodeError as exc:
        raise _file_error(
            path, f"not valid UTF-8 at byte {exc.start}", "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise _file_error(
            path, f"cannot read the file: {exc.strerror or exc}", "check the path and permissions"
        ) from None
    return parse_config(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def _file_error(path: str, message: str, hint: str) -> ConfigErrors:
    return ConfigErrors([ConfigError(message, file=path, hint=hint)])
