"""Configuration: .ini text -> frozen dataclasses (pure: no I/O besides reading the text).

INTERFACE (fixed; the implementation below is being written):

- ``parse_config(text: str, path: str = "<config>") -> Config`` parses the whole file and
  raises ``ConfigErrors`` listing *every* problem at once (each a ``ConfigError`` naming
  file, section, key and a hint).
- ``load_config(path: str) -> Config`` reads the file (an unreadable file is a
  ``ConfigErrors`` with one ``ConfigError``) and calls ``parse_config``.
- ``parse_duration("30s") -> 30.0``, ``parse_size("64k") -> 65536``,
  ``parse_address("host:port" | "[v6]:port" | "unix:/path") -> Address``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AddressKind = Literal["tcp", "unix"]


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP ``host:port`` (host may be an IPv6 literal, without brackets) or a Unix path."""

    kind: AddressKind
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


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
    buffer_size: int = 65536
    backlog: int = 1024
    proxy_protocol: str = "off"  # PROXY header sent to the backend: off | v1 | v2


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """The ``[tunnel]`` section: process-wide settings."""

    workers: int = 0  # 0 means "auto": one per CPU core
    log_level: str = "info"
    log_target: str = "stderr"
    log_facility: str = "daemon"
    max_connections: int = 10000
    drain_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file."""

    path: str
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    listeners: tuple[ListenerConfig, ...] = ()
