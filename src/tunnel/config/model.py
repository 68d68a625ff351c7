"""Configuration model: the frozen dataclasses a parsed ``.ini`` file becomes (pure).

Re-exported by :mod:`tunnel.config`, which is where the rest of the code imports them from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tunnel.config.routing import Route

if TYPE_CHECKING:  # config.acme imports this module
    from tunnel.config.acme import AcmeSettings

AddressKind = Literal["tcp", "unix", "srv"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SyslogAddress = str | tuple[str, int]  # a Unix socket path, or (host, port) for UDP


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP ``host:port`` (host may be an IPv6 literal, without brackets) or a Unix path.

    In a backend's ``connect`` list, an address may carry a ``weight`` (round-robin and
    least-connections pools), and ``srv`` stands for the SRV records of the name ``host``.
    """

    kind: AddressKind
    host: str = ""
    port: int = 0
    path: str = ""
    weight: int = 1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "srv":
            return f"srv:{self.host}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Rate:
    """A token-bucket rate: ``per_second`` on average, up to ``burst`` at once."""

    per_second: float
    burst: int

    def __str__(self) -> str:
        return f"{self.per_second:g}/s burst {self.burst}"


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listener section: where to accept, which certificate, where to relay."""

    name: str
    accept: tuple[Address, ...]
    cert: tuple[str, ...]
    key: str | None
    connect: tuple[Address, ...]
    tls_min: str = "1.2"
    tls_max: str = "1.3"
    ciphers: str | None = None
    ciphersuites: str | None = None
    curves: str | None = None
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0
    max_connections: int = 10000
    buffer_size: int = 262144  # 256k: see docs/performance.md, "Fifth pass"
    backlog: int = 1024
    proxy_protocol: str = "off"  # PROXY header sent to the backend: off | v1 | v2
    proxy_crc32c: bool = False
    proxy_unique_id: bool = False
    proxy_cert_tlv: int = 0  # 0: the DER client certificate is not sent
    proxy_keep_tlvs: bool = False
    proxy_ja4_tlv: int = 0  # 0: the client's JA4 is not sent
    proxy_group_tlv: int = 0  # 0: the negotiated key exchange group is not sent
    proxy_from: tuple[IPNetwork, ...] = ()  # non-empty: a PROXY header is required
    proxy_timeout: float = 5.0
    cert_dir: str | None = None  # a directory of PEM files, each a cert chain with its key
    sni_strict: bool = False  # refuse an unknown SNI name instead of serving the default
    alpn: tuple[str, ...] = ()  # ALPN protocols offered, in server preference order
    backend: str | None = None  # a [backend:NAME] used instead of ``connect``
    routes: tuple[Route, ...] = ()  # SNI/ALPN routes to [backend:NAME] sections
    ticket_key_file: str | None = None  # session ticket keys shared by several instances
    client_ca: tuple[str, ...] = ()  # PEM CA files that client certificates must chain to
    verify: str = "none"  # client certificates: none | optional | required
    crl: tuple[str, ...] = ()  # PEM CRL files checked for the client's certificate
    allow_cn: tuple[str, ...] = ()  # accepted client subject CNs (empty: any)
    allow_dns: tuple[str, ...] = ()  # accepted client DNS SANs (empty: any)
    allow_uri: tuple[str, ...] = ()  # accepted client URI SANs (empty: any)
    client: bool = False  # accept plaintext, relay to a TLS backend (stunnel's client mode)
    keylog_file: str | None = None  # NSS key log of every TLS session (debugging only)
    max_connections_per_ip: int = 0  # per worker; 0 = no limit
    max_handshakes_per_ip: int = 0  # per worker; 0 = no limit
    acme: tuple[str, ...] = ()  # names whose certificate Tunnel obtains (ACME)
    acme_state_dir: str | None = None  # the [acme] state_dir, when ``acme`` is set
    deny_ja4: tuple[str, ...] = ()  # clients with these JA4 fingerprints are refused
    # New connections / full handshakes per second from one address, across all workers.
    max_connection_rate_per_ip: Rate | None = None
    max_handshake_rate_per_ip: Rate | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """A ``[backend:NAME]`` section: addresses tried in order, and how to talk to them."""

    name: str
    connect: tuple[Address, ...]
    connect_timeout: float = 5.0
    proxy_protocol: str = "off"
    tls: bool = False  # connect over TLS (re-encrypt)
    ca: str | None = None  # PEM CA file to verify the backend; None: the system store
    sni: str | None = None  # server name sent and verified; default: the connect host
    cert: str | None = None  # client certificate chain (PEM) presented to the backend
    key: str | None = None  # its key, when not inside ``cert``
    keylog_file: str | None = None  # NSS key log of the TLS sessions to this backend
    passthrough: bool = False  # relay the client's TLS stream untouched (SNI passthrough)
    balance: str = "first"  # first (failover in order) | round-robin | least-connections
    max_fails: int = 1  # consecutive failures that take an address out (0: never)
    fail_backoff: float = 10.0  # how long an address that failed is skipped
    health_check: str = "off"  # off | tcp | tls: active checks every health_interval
    health_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """The ``[tunnel]`` section: process-wide settings."""

    workers: int = 0  # 0 means "auto": one per CPU core
    log_level: str = "info"
    log_target: str = "stderr"
    log_facility: str = "daemon"
    max_connections: int = 10000
    drain_timeout: float = 30.0
    log_file: str | None = None  # with log_target = file
    watch: bool = False  # reload when a certificate or key file changes
    pid_file: str | None = None
    log_format: str = "text"
    log_connections: bool = True  # no: no summary line per connection (other lines stay)
    admin: Address | None = None
    daemon: bool = False
    user: str | None = None  # drop privileges to this user after binding
    group: str | None = None
    allow_root: bool = False
    shutdown_delay: float = 0.0  # unready (/readyz) this long before draining
    # A Unix datagram socket path, or (host, port) for UDP; with log_target = syslog.
    log_syslog_address: SyslogAddress = "/dev/log"
    resolvers: tuple[Address, ...] = ()  # DNS servers for backend names; (): resolv.conf
    dataplane: str = "auto"  # auto (compiled where built), compiled or python


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file."""

    path: str
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    listeners: tuple[ListenerConfig, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    acme: AcmeSettings | None = None


class ConfigValueError(ValueError):
    """A single bad value; ``hint`` says what is expected instead."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)
