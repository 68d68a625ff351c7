"""config: the ``.ini`` file turned into frozen, checked values. Pure: no sockets, no TLS.

Room rules: may import ``tunnel.wire``, ``tunnel._native`` and ``tunnel.errors``; nothing
above. The SNI/ALPN route tables live here (``routing``) because the parser builds them.
This package's own names are the public face of the room: other rooms import from
``tunnel.config`` rather than from its modules.
"""

from tunnel.config.model import (
    Address,
    AddressKind,
    BackendConfig,
    Config,
    ConfigValueError,
    IPNetwork,
    ListenerConfig,
    SyslogAddress,
    TunnelSettings,
)
from tunnel.config.parser import (
    BACKEND_KEYS,
    INHERITABLE_KEYS,
    LISTENER_KEYS,
    TUNNEL_KEYS,
    load_config,
    parse_config,
)
from tunnel.config.values import (
    TLS_VERSIONS,
    parse_address,
    parse_duration,
    parse_size,
    parse_syslog_address,
)

__all__ = [
    "BACKEND_KEYS",
    "INHERITABLE_KEYS",
    "LISTENER_KEYS",
    "TLS_VERSIONS",
    "TUNNEL_KEYS",
    "Address",
    "AddressKind",
    "BackendConfig",
    "Config",
    "ConfigValueError",
    "IPNetwork",
    "ListenerConfig",
    "SyslogAddress",
    "TunnelSettings",
    "load_config",
    "parse_address",
    "parse_config",
    "parse_duration",
    "parse_size",
    "parse_syslog_address",
]
