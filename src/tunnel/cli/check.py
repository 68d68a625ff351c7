"""``tunnel check``: validate a configuration, certificates included, and say what would run.

Every problem is reported at once (syntax, values and files); nothing is bound or served.
"""

from __future__ import annotations

import argparse
import datetime
import resource

from tunnel.cli.common import EXIT_OK, report
from tunnel.config import (
    BackendConfig,
    Config,
    ListenerConfig,
    TunnelSettings,
    load_partial,
    missing_inputs,
)
from tunnel.dataplane import plane
from tunnel.dataplane.accept import fd_capped
from tunnel.errors import ConfigError, ConfigErrors
from tunnel.process import generation, privileges, readable
from tunnel.tls.contexts import CertInfo, describe_certificates
from tunnel.tls.expiry import expiry_warning
from tunnel.tls.groups import effective_groups


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _tls_range(listener: ListenerConfig) -> str:
    if listener.tls_min == listener.tls_max:
        return f"TLS {listener.tls_min}"
    return f"TLS {listener.tls_min}-{listener.tls_max}"


def _cert_line(info: CertInfo, now: datetime.datetime) -> str:
    names = ", ".join(info.names) or info.subject or "-"
    days = info.expires_in_days(now)
    return (
        f"    cert {info.path}: {info.key_type}; names {names}; "
        f"expires {info.not_after:%Y-%m-%d} ({days:.0f} days)"
    )


def _describe_all(config: Config) -> dict[str, list[CertInfo]]:
    """Certificate facts per listener; ConfigErrors if a file cannot be read."""
    described: dict[str, list[CertInfo]] = {}
    errors: list[ConfigError] = []
    for listener in config.listeners:
        try:
            described[listener.name] = describe_certificates(listener)
        except (OSError, ValueError) as exc:
            errors.append(
                ConfigError(
                    f"cannot read the certificate: {exc}",
                    file=config.path,
                    section=listener.name,
                    key="cert",
                    hint="the cert file must start with a PEM certificate",
                )
            )
    if errors:
        raise ConfigErrors(errors)
    return described


def _plane_line(listener: ListenerConfig, backends: dict[str, BackendConfig], setting: str) -> str:
    chosen, why = plane.choose(listener, backends, setting)
    return f"    data plane: {chosen}" + (f" ({why})" if why else "")


def _listener_summary(listener: ListenerConfig) -> list[str]:
    accept = ", ".join(str(a) for a in listener.accept)
    lines = [
        f"  listener [{listener.name}]: accept {accept} -> {generation.destination(listener)}",
        f"    {_tls_range(listener)}; proxy_protocol {listener.proxy_protocol}; "
        f"max_connections {listener.max_connections}",
        f"    timeouts: handshake {_duration(listener.handshake_timeout)}, "
        f"connect {_duration(listener.connect_timeout)}, "
        f"idle {_duration(listener.idle_timeout)}",
    ]
    if not listener.client:  # a client-mode listener accepts plaintext: no key exchange
        how = "curves" if listener.curves else "OpenSSL default"
        groups = ", ".join(effective_groups(listener.curves)) or "unknown"
        lines.append(f"    key exchange groups ({how}): {groups}")
    return lines


def _max_connections(settings: TunnelSettings, warnings: list[str]) -> str:
    """max_connections, and the lower cap the open-files limit puts on it (as workers do).

    Like a worker, warn only about a value that was written: the default is a ceiling.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # `run` raises the soft limit to it
    wanted = settings.max_connections
    capped = fd_capped(wanted, nofile=hard)
    if capped == wanted:
        return str(wanted)
    if wanted != TunnelSettings().max_connections:
        warnings.append(
            f"WARN: max_connections {wanted} needs more open files than the limit ({hard}) "
            f"allows: each worker takes at most {capped}; raise the hard limit "
            "(ulimit -Hn, systemd LimitNOFILE=) or lower max_connections"
        )
    return f"{wanted} (open-files limit {hard}: {capped} per worker)"


def _summary(config: Config, certs: dict[str, list[CertInfo]]) -> tuple[list[str], list[str]]:
    """The lines ``tunnel check`` prints: the summary and the warnings."""
    now = datetime.datetime.now(datetime.UTC)
    settings = config.tunnel
    count = generation.worker_count(config)
    how = " (auto: one per CPU core)" if settings.workers == 0 else ""
    warnings: list[str] = []
    lines = [
        f"{config.path}: OK",
        f"  workers {count}{how}; max_connections {_max_connections(settings, warnings)}; "
        f"drain_timeout {_duration(settings.drain_timeout)}",
        f"  log: {settings.log_level} to {settings.log_target}"
        + (f" (facility {settings.log_facility})" if settings.log_target == "syslog" else ""),
    ]
    if config.acme is not None:
        # Here, not at the top: `tunnel run` would load the ACME code without [acme].
        from tunnel.process.acme import acme_listener_line, acme_summary

        lines.append(acme_summary(config.acme))
    if plane.worth_a_warning(settings.dataplane):
        why = plane.load(settings.dataplane)[1]
        warnings.append(f"WARN: {why}: the Python data plane serves every listener")
    backends = {b.name: b for b in config.backends}
    for listener in config.listeners:
        lines += _listener_summary(listener)
        if listener.acme and config.acme is not None:
            lines.append(f"    {acme_listener_line(listener.acme, config.acme)}")
        lines.append(_plane_line(listener, backends, settings.dataplane))
        for info in certs.get(listener.name, []):
            lines.append(_cert_line(info, now))
            managed = set(info.names) == set(listener.acme)  # renewed by Tunnel itself
            warning = expiry_warning(listener.name, info.path, info.not_after, now)
            if warning is not None and not managed:
                warnings.append(warning)
    return lines, warnings


def _check_all(path: str) -> Config:
    """Parse ``path`` and load every certificate; ConfigErrors lists every problem at once.

    Syntax and value errors do not hide file problems: the sections that parsed cleanly
    are loaded as ``run`` would load them, and the files named by the others must exist.
    """
    parsed = load_partial(path)
    errors = [*parsed.errors, *missing_inputs(parsed)]
    try:
        generation.build_contexts(parsed.config)
    except ConfigErrors as exc:
        errors += exc.errors
    if errors:
        raise ConfigErrors(errors)
    return parsed.config


def cmd_check(args: argparse.Namespace) -> int:
    """``tunnel check``: validate everything, certificates included, without serving."""
    config = _check_all(args.config)
    identity = privileges.resolve(config)
    lines, warnings = _summary(config, _describe_all(config))
    try:
        privileges.check_root(config, identity)
    except ConfigError as exc:
        # The file is valid; who runs it is not part of it. Say what `run` would do.
        warnings.append(f"WARN: {exc} -- 'tunnel run' by this user would refuse to start")
    warnings += readable.warnings(config, identity)
    report(lines, warnings)
    return EXIT_OK
