"""Client contexts for TLS backends (``tls = yes`` in a ``[backend:NAME]``).

Built by the supervisor with the listeners' contexts (so a bad ``ca`` or ``cert`` stops
the start, or the reload) and handed to the workers with them.
"""

from __future__ import annotations

import logging
import ssl

from tunnel.config import BackendConfig, Config
from tunnel.errors import ConfigError, ConfigErrors, TLSSetupError
from tunnel.tls.eof import strict_eof
from tunnel.tls.secret_files import set_keylog

log = logging.getLogger("tunnel.backend_tls")


def build_backend_context(backend: BackendConfig, file: str = "<config>") -> ssl.SSLContext:
    """A client context for one backend: verify against ``ca`` (or the system store)."""
    section = f"backend:{backend.name}"
    ctx = strict_eof(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))  # as 3.11.3+
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        key = "ca"
        if backend.ca:
            ctx.load_verify_locations(cafile=backend.ca)
        key = "cert"
        if backend.cert:
            ctx.load_cert_chain(backend.cert, backend.key)
        key = "keylog_file"
        if backend.keylog_file:
            set_keylog(ctx, backend.keylog_file)
            log.warning(
                "[backend:%s] keylog_file is on: TLS session secrets are written to %s",
                backend.name,
                backend.keylog_file,
            )
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(
            f"cannot load {getattr(backend, key)}: {getattr(exc, 'strerror', None) or exc}",
            file=file,
            section=section,
            key=key,
            hint="give a readable PEM file (cert: chain and key, or set 'key')",
        ) from None
    return ctx


def build_backend_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """Build the context of every TLS backend; ConfigErrors if any fails."""
    contexts: dict[str, ssl.SSLContext] = {}
    errors: list[ConfigError] = []
    for backend in config.backends:
        if not backend.tls:
            continue
        try:
            contexts[backend.name] = build_backend_context(backend, config.path)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    return contexts
