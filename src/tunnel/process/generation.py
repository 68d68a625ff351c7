"""What a generation of workers is built from: worker count, TLS contexts, logging.

Used by the supervisor at start and on every reload (and by ``tunnel check``), so that
both paths build exactly the same things and fail with the same messages.
"""

from __future__ import annotations

import logging
import os

from tunnel.config import Config, ListenerConfig
from tunnel.observe.log import setup_from_settings
from tunnel.tls.bundle import TLSBundle, build_bundle

log = logging.getLogger("tunnel.supervisor")

_LOG_SETTINGS = (
    "log_level",
    "log_target",
    "log_facility",
    "log_file",
    "log_format",
    "log_syslog_address",
)


def worker_count(config: Config) -> int:
    """The number of worker processes (``workers = auto``: one per CPU core)."""
    if config.tunnel.workers > 0:
        return config.tunnel.workers
    return len(os.sched_getaffinity(0)) or 1


def destination(listener: ListenerConfig) -> str:
    """Where a listener relays to, for humans: its addresses or backend, and its routes."""
    addresses = ", ".join(str(a) for a in listener.connect)
    text = f"connect {addresses}" if addresses else f"backend {listener.backend}"
    if listener.client:
        text += " (client mode: plaintext in, TLS out)"
    if listener.routes:
        text += "; routes " + ", ".join(str(route) for route in listener.routes)
    return text


def build_contexts(config: Config, previous: TLSBundle | None = None) -> TLSBundle:
    """Build every TLS context the workers need; report all failures at once.

    A reload passes the serving generation's bundle as ``previous``: ticket key files
    still in use keep their stores.
    """
    return build_bundle(config, previous)


def apply_logging(old: Config, new: Config, override: str | None) -> None:
    """After a reload: set logging up again if its settings changed (errors are logged)."""
    if all(getattr(new.tunnel, k) == getattr(old.tunnel, k) for k in _LOG_SETTINGS):
        return
    settings = new.tunnel
    try:
        setup_from_settings(settings, override)
    except (ValueError, OSError) as exc:
        log.error("reload: cannot set up logging (%s); keeping the previous setup", exc)
