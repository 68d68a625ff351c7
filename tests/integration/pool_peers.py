"""The pool tests' names for :mod:`harness.pool_peers` (named backends, a small DNS)."""

from __future__ import annotations

from harness.pool_peers import DNSServer, NamedServer, dns_server, who

__all__ = ["DNSServer", "NamedServer", "dns_server", "who"]
