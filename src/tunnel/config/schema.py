"""Every configuration key, declared once: where it may appear, how it is read, what it means.

The parser, the key sets (``TUNNEL_KEYS``, ``LISTENER_KEYS``, ``INHERITABLE_KEYS``,
``BACKEND_KEYS``), the "did you mean" of unknown keys, ``tunnel check`` and the tests that
``tunnel.ini`` and ``tunnel.ini(5)`` describe every key all read :data:`KEYS`. A key's
default is its field's default in :mod:`tunnel.config.model` (see :func:`default`), so that
the dataclasses stay usable on their own. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from tunnel.config import acme
from tunnel.config import values as v
from tunnel.config.fingerprints import ja4_list
from tunnel.config.model import BackendConfig, ListenerConfig, TunnelSettings
from tunnel.config.pool import BALANCE_MODES, HEALTH_CHECKS, pool_addresses, resolver_list
from tunnel.config.rate import rate


class Scope(enum.Flag):
    """Where a key may be written."""

    TUNNEL = enum.auto()  # [tunnel]: a process setting (a TunnelSettings field)
    LISTENER = enum.auto()  # a listener section (a ListenerConfig field)
    DEFAULT = enum.auto()  # a listener key that [tunnel] may set for every listener
    BACKEND = enum.auto()  # a [backend:NAME] section (a BackendConfig field)
    ACME = enum.auto()  # the [acme] section (an AcmeSettings field)


Kind = Literal["tunnel", "listener", "backend", "acme"]
# What a path-valued key names: a file read (must exist), a directory read, a file written,
# or the unix: socket paths of an address list. All are resolved against the config's folder.
PathKind = Literal["", "read", "dir", "write", "socket"]


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One configuration key."""

    name: str
    scope: Scope
    convert: Callable[[str], Any]
    doc: str  # one line, for humans
    path: PathKind = ""
    field: str = ""  # the dataclass field, when it is not named like the key
    required: str = ""  # an example value, for a key that must be set
    instead: tuple[str, ...] = ()  # keys that make a required key optional

    @property
    def attr(self) -> str:
        """The dataclass field this key sets."""
        return self.field or self.name


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_TARGETS = ("stderr", "syslog", "file")
LOG_FACILITIES = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron"),
    *("authpriv", "ftp", *(f"local{i}" for i in range(8))),
)
LOG_FORMATS = ("text", "json")
PROXY_PROTOCOLS = ("off", "v1", "v2")
VERIFY_MODES = ("none", "optional", "required")
DATAPLANES = ("auto", "compiled", "python")  # tunnel.dataplane.plane.CHOICES

T, L, D, B, A = Scope.TUNNEL, Scope.LISTENER, Scope.DEFAULT, Scope.BACKEND, Scope.ACME
_SHORT = v.duration_range(300.0)
_COUNT = v.integer_range(0, 10_000_000)

KEYS: tuple[Key, ...] = (
    # ------------------------------------------------------------------ [tunnel] only
    Key("workers", T, v.workers_count, "worker processes: auto (one per CPU core) or 1..256"),
    Key("log_level", T, v.one_of(LOG_LEVELS), "least severe level logged"),
    Key("log_target", T, v.one_of(LOG_TARGETS), "where logs go: stderr, syslog or file"),
    Key("log_file", T, v.passthrough, "file logs are appended to (log_target = file)", "write"),
    Key("log_facility", T, v.one_of(LOG_FACILITIES), "syslog facility (log_target = syslog)"),
    Key("log_syslog_address", T, v.parse_syslog_address, "/dev/log, unix:/path or udp:H:P"),
    Key("log_format", T, v.one_of(LOG_FORMATS), "text, or json: one object per line"),
    Key("log_connections", T, v.boolean, "log each connection's summary line (at INFO)"),
    Key("admin", T, v.admin_address, "host:port of the admin endpoint (metrics, health)"),
    Key(
        "max_connections",
        T | L,  # in both: a listener's default is the [tunnel] value
        v.integer_range(1, 10_000_000),
        "most connections open at once per worker (in [tunnel]) or per listener and worker",
    ),
    Key("drain_timeout", T, v.duration_range(3600.0, allow_zero=True), "drain time at exit"),
    Key(
        "shutdown_delay",
        T,
        v.duration_range(600.0, allow_zero=True),
        "unready (/readyz 503) this long before draining on SIGTERM",
    ),
    Key("pid_file", T, v.passthrough, "file holding the supervisor's process id", "write"),
    Key("daemon", T, v.boolean, "detach from the terminal once serving"),
    Key("user", T, v.passthrough, "user to switch to after binding and reading certificates"),
    Key("group", T, v.passthrough, "group to switch to (default: the user's)"),
    Key("allow_root", T, v.boolean, "allow serving as root"),
    Key("watch", T, v.boolean, "reload when a certificate, key, CA or CRL file changes"),
    Key("resolvers", T, resolver_list, "DNS servers for backend names (default: resolv.conf)"),
    Key(
        "dataplane",
        T,
        v.one_of(DATAPLANES),
        "auto (the compiled data plane where it was built), compiled or python",
    ),
    # ------------------------------------------------------------------ listeners
    Key(
        "accept",
        L,
        v.address_list(accept=True),
        "TCP address(es) to accept connections on",
        required="127.0.0.1:8443",
    ),
    Key(
        "cert",
        L,
        v.path_list,
        "PEM certificate chain file(s), the key inside unless 'key' is set",
        "read",
        required="/etc/tunnel/site.pem",
        instead=("cert_dir", "client", "acme"),
    ),
    Key("key", L, v.passthrough, "PEM private key file, when not inside cert", "read"),
    Key("cert_dir", L, v.passthrough, "directory of PEM files, one cert+key each", "dir"),
    Key(
        "connect",
        L | B,
        pool_addresses,
        "backend address(es) [weight=N], srv:NAME; tried in order unless balance says",
        "socket",
        required="127.0.0.1:8080",
        instead=("backend",),
    ),
    Key("backend", L, v.passthrough, "a [backend:NAME] to relay to instead of connect"),
    Key("route", L, v.routes, "sni:NAME=BACKEND and alpn:PROTO=BACKEND rules", field="routes"),
    Key("client_ca", L, v.path_list, "PEM CA file(s) client certificates chain to", "read"),
    Key("verify", L, v.one_of(VERIFY_MODES), "client certificates: none, optional or required"),
    Key("crl", L, v.path_list, "PEM CRL file(s) checked for client certificates", "read"),
    Key("allow_cn", L, v.words, "accepted client certificate subject CNs"),
    Key("allow_dns", L, v.lower_words, "accepted client certificate DNS names"),
    Key("allow_uri", L, v.words, "accepted client certificate URIs"),
    Key("client", L, v.boolean, "client mode: plaintext in, TLS to the backend out"),
    Key("keylog_file", L | B, v.passthrough, "NSS key log of the TLS sessions (debug)", "write"),
    # ------------------------------------------------------------------ listener defaults
    Key("tls_min", D, v.tls_version, "oldest TLS version offered: 1.2 or 1.3"),
    Key("tls_max", D, v.tls_version, "newest TLS version offered: 1.2 or 1.3"),
    Key("ciphers", D, v.passthrough, "OpenSSL cipher string for TLS 1.2"),
    Key("ciphersuites", D, v.passthrough, "TLS 1.3 cipher suites"),
    Key("curves", D, v.curves, "key exchange groups, colon separated"),
    Key("handshake_timeout", D, _SHORT, "time a client has for the TLS handshake"),
    Key("connect_timeout", D | B, _SHORT, "time to connect to one backend address"),
    Key("idle_timeout", D, v.duration_range(7 * 86400.0), "close after this long idle"),
    Key("buffer_size", D, v.size_range(4 << 10, 16 << 20), "per-direction high-water mark"),
    Key("backlog", D, v.integer_range(1, 65535), "listen() queue length"),
    Key("proxy_protocol", D | B, v.one_of(PROXY_PROTOCOLS), "PROXY header to the backend"),
    Key("proxy_crc32c", D, v.boolean, "add a CRC32C TLV to the PROXY v2 header"),
    Key("proxy_unique_id", D, v.boolean, "add a UNIQUE_ID TLV to the PROXY v2 header"),
    Key("proxy_cert_tlv", D, v.tlv_type, "TLV type (0xE0..0xEF) for the client cert, or off"),
    Key("proxy_ja4_tlv", D, v.tlv_type, "TLV type (0xE0..0xEF) for the client's JA4, or off"),
    Key("proxy_group_tlv", D, v.tlv_type, "TLV type (0xE0..0xEF) for the key exchange group"),
    Key("proxy_keep_tlvs", D, v.boolean, "pass the balancer's TLVs on (proxy_from, v2)"),
    Key("proxy_from", D, v.networks, "networks whose connections start with a PROXY header"),
    Key("proxy_timeout", D, _SHORT, "time the inbound PROXY header may take"),
    Key("sni_strict", D, v.boolean, "refuse an SNI name that no certificate has"),
    Key("alpn", D, v.alpn_list, "ALPN protocols offered, in preference order"),
    Key("ticket_key_file", D, v.passthrough, "session-ticket keys shared by a fleet", "read"),
    Key("max_connections_per_ip", D, _COUNT, "connections at once from one address (0: off)"),
    Key("max_handshakes_per_ip", D, _COUNT, "handshakes at once from one address (0: off)"),
    Key("deny_ja4", D, ja4_list, "JA4 fingerprints of clients refused before the handshake"),
    Key(
        "max_connection_rate_per_ip",
        D,
        rate,
        "new connections per second from one address, all workers together: 20/s burst 40",
    ),
    Key(
        "max_handshake_rate_per_ip",
        D,
        rate,
        "full (not resumed) TLS handshakes per second from one address, all workers together",
    ),
    # ------------------------------------------------------------------ [backend:NAME] only
    Key("tls", B, v.boolean, "connect to the backend over TLS"),
    Key("passthrough", B, v.boolean, "relay the client's TLS untouched (picked by SNI route)"),
    Key("ca", B, v.passthrough, "PEM CA file the backend's certificate chains to", "read"),
    Key("sni", B, v.passthrough, "server name sent and verified"),
    Key("cert", B, v.passthrough, "PEM client certificate chain shown to the backend", "read"),
    Key("key", B, v.passthrough, "its private key, when not inside cert", "read"),
    Key("balance", B, v.one_of(BALANCE_MODES), "first, round-robin or least-connections"),
    Key("max_fails", B, v.integer_range(0, 1000), "failures in a row that mark an address down"),
    Key("fail_backoff", B, v.duration_range(3600.0), "how long a down address is skipped"),
    Key("health_check", B, v.one_of(HEALTH_CHECKS), "active checks: off, tcp or tls"),
    Key("health_interval", B, v.duration_range(3600.0), "time between two active checks"),
    # ------------------------------------------------------------------ ACME
    Key("acme", L, acme.parse_names, "DNS names whose certificate Tunnel obtains (ACME)"),
    Key(
        "directory",
        A,
        acme.directory_url,
        "the ACME server's directory URL",
        required="https://acme-v02.api.letsencrypt.org/directory",
    ),
    Key("email", A, acme.email, "contact address of the ACME account"),
    Key("state_dir", A, v.passthrough, "account key, certificates, challenges, lock", "write"),
    Key("ca_file", A, v.passthrough, "PEM CA file trusted for the ACME server's HTTPS", "read"),
    Key("challenge", A, v.one_of(acme.CHALLENGES), "tls-alpn-01 or http-01"),
    Key("http_port", A, v.integer_range(1, 65535), "port of the HTTP-01 responder"),
    Key("renew_before", A, acme.parse_renew_before, "renew this long (or share) before expiry"),
)

_SCOPES: dict[Kind, Scope] = {"tunnel": T | D, "listener": L | D, "backend": B, "acme": A}
_MODELS: dict[Kind, type] = {
    "tunnel": TunnelSettings,
    "listener": ListenerConfig,
    "backend": BackendConfig,
    "acme": acme.AcmeSettings,
}
SECTION_NAMES: dict[Kind, str] = {
    "tunnel": "[tunnel]",
    "listener": "a listener section",
    "backend": "a [backend:NAME] section",
    "acme": "[acme]",
}


_BY_KIND: dict[Kind, Mapping[str, Key]] = {
    kind: MappingProxyType({key.name: key for key in KEYS if key.scope & scope})
    for kind, scope in _SCOPES.items()
}


def keys(kind: Kind) -> Mapping[str, Key]:
    """The keys a section of this kind accepts, by name, in declaration order."""
    return _BY_KIND[kind]


def key_names(scope: Scope) -> frozenset[str]:
    """The names of the keys declared with any of the flags in ``scope``."""
    return frozenset(key.name for key in KEYS if key.scope & scope)


def default(kind: Kind, key: Key) -> Any:
    """A key's default in a section of this kind: its dataclass field's default.

    A listener's ``max_connections`` defaults to the ``[tunnel]`` value; a key without a
    default (``accept``, ``cert``, ``key``, ``connect``) returns None.
    """
    model = ListenerConfig if kind == "tunnel" and not key.scope & T else _MODELS[kind]
    for item in dataclasses.fields(model):
        if item.name == key.attr:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
    return None


def belongs(name: str, kind: Kind) -> str | None:
    """Where a key that a section of ``kind`` does not accept belongs, or None if nowhere."""
    kinds: tuple[Kind, ...] = ("listener", "tunnel", "backend", "acme")
    for other in kinds:
        if other != kind and name in keys(other):
            return SECTION_NAMES[other]
    return None


TUNNEL_KEYS = key_names(T | D)
LISTENER_KEYS = key_names(L | D)
INHERITABLE_KEYS = key_names(D)
BACKEND_KEYS = key_names(B)
ACME_KEYS = key_names(A)
