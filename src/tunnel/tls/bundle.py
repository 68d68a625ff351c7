"""Every TLS context one generation of workers serves with, built once by the supervisor.

Built before the workers fork (so they share session-ticket keys, and a bad certificate
fails the start or the reload rather than the first client) and handed to each worker as
one value: the listeners' contexts, the TLS backends' contexts and the ticket key stores
the workers refresh. Nothing here is module-level state: a reload builds a new bundle
(reusing the previous one's ticket key stores) and only a complete one replaces the old.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from tunnel.config import Config
from tunnel.errors import ConfigError, ConfigErrors
from tunnel.tls.backend import build_backend_contexts
from tunnel.tls.contexts import ServerTLS, TicketStores, build_server_tls
from tunnel.tls.tickets import TicketKeys


@dataclass(frozen=True, slots=True)
class TLSBundle:
    """The TLS side of a generation: what a worker needs to serve its listeners."""

    listeners: Mapping[str, ServerTLS] = field(default_factory=dict)
    backends: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # TLS backends only
    tickets: Mapping[str, TicketKeys] = field(default_factory=dict)  # by ticket key file

    def server(self, listener: str) -> ssl.SSLContext:
        """The context a listener's connections start on."""
        return self.listeners[listener].default


def build_bundle(config: Config, previous: TLSBundle | None = None) -> TLSBundle:
    """Build every listener's and TLS backend's context; ConfigErrors lists every failure.

    Ticket key files that ``previous`` already read keep their stores (see
    :func:`tunnel.tls.contexts.build_server_tls`); files no listener uses are dropped.
    """
    known: TicketStores = dict(previous.tickets) if previous is not None else {}
    tickets: TicketStores = {}
    listeners: dict[str, ServerTLS] = {}
    errors: list[ConfigError] = []
    for listener in config.listeners:
        path = listener.ticket_key_file
        if path is not None and path in known:
            tickets[path] = known[path]
        try:
            listeners[listener.name] = build_server_tls(listener, config.path, tickets)
        except ConfigError as exc:
            errors.append(exc)
    backends: dict[str, ssl.SSLContext] = {}
    try:
        backends = build_backend_contexts(config)
    except ConfigErrors as exc:
        errors += exc.errors
    if errors:
        raise ConfigErrors(errors)
    return TLSBundle(listeners, backends, tickets)
