"""The WARNING of a backend whose TLS handshake failed, shared by both data planes.

Failover to the next address would hide the failure, so it is logged; but every
connection meets the same fault, so the line is written once per listener, address and
10 s, with how many were held back (:mod:`tunnel.observe.throttle`). The metrics count
every one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tunnel.observe.throttle import Throttle, held_back

log = logging.getLogger("tunnel.conn")
_throttle = Throttle()


def backend_tls_failed(listener: str, addr: Any, why: str, last: bool) -> None:
    """Log that ``addr`` (a backend address of ``listener``) failed its TLS handshake."""
    count = _throttle.claim((listener, str(addr), why), time.monotonic())
    if count is None:
        return
    log.warning(
        "[%s] backend %s: TLS handshake failed: %s%s%s",
        listener,
        addr,
        why,
        "" if last else "; trying the next address",
        held_back(count, _throttle.interval),
    )
