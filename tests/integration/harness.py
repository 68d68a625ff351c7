"""The integration tests' names for the shared harness (:mod:`harness`).

Everything lives in ``tests/harness/``; this module only re-exports it under the names the
integration and adversarial tests import (``from .harness import ...``).
"""

from __future__ import annotations

from harness.backends import (
    HASH_HEADER,
    SENDER_LIMIT,
    Backend,
    BackendFactory,
    ConnRecord,
    Handler,
    echo_handler,
    hash_exchange,
    hash_handler,
    recording_handler,
    reset_handler,
    sender_handler,
    sink_handler,
)
from harness.certs import TLS_VERSIONS, Certs, make_certs
from harness.clients import BioClient, s_client_renegotiate
from harness.config import render_config
from harness.net import (
    ALERT,
    APPLICATION_DATA,
    HANDSHAKE,
    MiB,
    abort,
    chunks,
    has_ipv6_loopback,
    parse_records,
    pattern,
    read_until_closed,
    recv_exactly,
    refusing_address,
    reserve_port,
)
from harness.planes import compiled_run, expect_plane
from harness.procfs import children, rss_kib
from harness.tunnel import SRC, TunnelFactory, TunnelProcess
from harness.waits import wait_until

# A port nobody else can take while the session runs (see harness.net.reserve_port).
free_port = reserve_port

__all__ = [
    "ALERT",
    "APPLICATION_DATA",
    "HANDSHAKE",
    "HASH_HEADER",
    "SENDER_LIMIT",
    "SRC",
    "TLS_VERSIONS",
    "Backend",
    "BackendFactory",
    "BioClient",
    "Certs",
    "ConnRecord",
    "Handler",
    "MiB",
    "TunnelFactory",
    "TunnelProcess",
    "abort",
    "children",
    "chunks",
    "compiled_run",
    "echo_handler",
    "expect_plane",
    "free_port",
    "has_ipv6_loopback",
    "hash_exchange",
    "hash_handler",
    "make_certs",
    "parse_records",
    "pattern",
    "read_until_closed",
    "recording_handler",
    "recv_exactly",
    "refusing_address",
    "render_config",
    "reserve_port",
    "reset_handler",
    "rss_kib",
    "s_client_renegotiate",
    "sender_handler",
    "sink_handler",
    "wait_until",
]
