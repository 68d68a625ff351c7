"""config: the ``.ini`` file turned into frozen, checked values. Pure: no sockets, no TLS.

Room rules: may import ``tunnel.wire``, ``tunnel._native`` and ``tunnel.errors``; nothing
above. The SNI/ALPN route tables live here (``routing``) because the parser builds them.

Map: ``schema`` declares every key once (where it may be written, its converter from
``values``, whether it names a path, its doc); ``ini`` reads the INI syntax; ``parser``
converts each section as the schema says, ``rules`` checks keys against each other, and
``model`` holds the frozen dataclasses (and the defaults) the result is made of.
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
    Rate,
    SyslogAddress,
    TunnelSettings,
)
from tunnel.config.parser import (
    InputFile,
    Parsed,
    load_config,
    load_partial,
    missing_inputs,
    parse_config,
    parse_partial,
)
from tunnel.config.schema import (
    ACME_KEYS,
    BACKEND_KEYS,
    INHERITABLE_KEYS,
    KEYS,
    LISTENER_KEYS,
    LOG_LEVELS,
    TUNNEL_KEYS,
    Key,
    Scope,
)
from tunnel.config.values import (
    TLS_VERSIONS,
    parse_address,
    parse_duration,
    parse_size,
    parse_syslog_address,
)

__all__ = [
    "ACME_KEYS",
    "BACKEND_KEYS",
    "INHERITABLE_KEYS",
    "KEYS",
    "LISTENER_KEYS",
    "LOG_LEVELS",
    "TLS_VERSIONS",
    "TUNNEL_KEYS",
    "Address",
    "AddressKind",
    "BackendConfig",
    "Config",
    "ConfigValueError",
    "IPNetwork",
    "InputFile",
    "Key",
    "ListenerConfig",
    "Parsed",
    "Rate",
    "Scope",
    "SyslogAddress",
    "TunnelSettings",
    "load_config",
    "load_partial",
    "missing_inputs",
    "parse_address",
    "parse_config",
    "parse_duration",
    "parse_partial",
    "parse_size",
    "parse_syslog_address",
]
