"""Command line: ``tunnel run | check | reload | status | demo | gen-cert``.

:func:`main` is the only code in Tunnel that prints to the user or decides the exit
code: 0 success, 1 a runtime failure, 2 a configuration or usage mistake, 130 Ctrl-C
before serving began. User mistakes never end in a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence

from tunnel import __version__
from tunnel.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
)
from tunnel.cli.common import err as _err
from tunnel.cli.common import out as _out
from tunnel.config import (
    LOG_LEVELS,
    BackendConfig,
    Config,
    ListenerConfig,
    TunnelSettings,
    load_config,
    load_partial,
    missing_inputs,
)
from tunnel.dataplane import fastplane
from tunnel.dataplane.accept import fd_capped
from tunnel.errors import ConfigError, ConfigErrors, TunnelError
from tunnel.observe.log import setup_from_settings
from tunnel.process import generation, privileges, readable, reload_status, service
from tunnel.process.pidfile import read_pid
from tunnel.tls.contexts import CertInfo, describe_certificates
from tunnel.tls.expiry import expiry_warning
from tunnel.tls.groups import effective_groups

Command = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- run


def _setup_logging(config: Config, override: str | None) -> None:
    settings = config.tunnel
    try:
        setup_from_settings(settings, override)
    except OSError as exc:
        if settings.log_target == "syslog":
            raise ConfigError(
                f"cannot send to the syslog socket {settings.log_syslog_address}: "
                f"{exc.strerror or exc}",
                file=config.path,
                section="tunnel",
                key="log_syslog_address",
                hint="is the syslog daemon running and listening there?",
            ) from None
        raise ConfigError(
            f"cannot open the log file {settings.log_file}: {exc.strerror or exc}",
            file=config.path,
            section="tunnel",
            key="log_file",
            hint="check that the directory exists and is writable",
        ) from None


def _log_destination(config: Config) -> str:
    """Where a daemon's log goes, for the line ``tunnel run`` prints once it started."""
    settings = config.tunnel
    if settings.log_target == "file":
        return os.path.abspath(settings.log_file or "")
    if settings.log_target == "syslog":
        return f"syslog (facility {settings.log_facility})"
    return "discarded (log_target = stderr; set syslog or file in [tunnel])"


def cmd_run(args: argparse.Namespace) -> int:
    """``tunnel run``: serve the configured listeners (in the background with --daemon)."""
    config = load_config(args.config)
    _setup_logging(config, args.log_level)

    def announce(pid: int) -> None:
        _out(f"started, pid {pid}, log: {_log_destination(config)}")

    return service.run_service(
        config, log_level=args.log_level, daemon=args.daemon, announce=announce
    )


# --------------------------------------------------------------------------- reload


def _pid_from_config(config: Config) -> int:
    path = config.tunnel.pid_file
    if not path:
        raise ConfigError(
            "no pid_file is set, so the running Tunnel cannot be found",
            file=config.path,
            section="tunnel",
            key="pid_file",
            hint="set pid_file (and restart Tunnel), or give the process id with --pid",
        )
    pid = read_pid(path)
    if pid is None:
        raise TunnelError(f"the pid file {path} is missing or empty: is Tunnel running?")
    return pid


def cmd_reload(args: argparse.Namespace) -> int:
    """``tunnel reload``: validate the configuration, send SIGHUP, wait for the outcome."""
    if args.config is None and args.pid is None:
        raise UsageError("give -c FILE (its pid_file finds the process) or --pid PID")
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    pid = args.pid
    status_file = None
    if args.config is not None:
        # Validate first, so that mistakes reach this terminal and nothing is signalled.
        config = load_config(args.config)
        generation.build_contexts(config)
        if pid is None:
            pid = _pid_from_config(config)
        if config.tunnel.pid_file:
            status_file = reload_status.status_path(config.tunnel.pid_file)
    before = reload_status.read_status(status_file) if status_file else None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        if args.pid is not None:
            raise TunnelError(f"no process {pid}: check the process id given to --pid") from None
        raise TunnelError(
            f"no process {pid}: Tunnel is not running (the pid file "
            f"{config.tunnel.pid_file} is stale)"
        ) from None
    except PermissionError:
        raise TunnelError(f"not allowed to signal pid {pid}: run as its user or root") from None
    if status_file is None or before is None:
        where = f"{status_file} is missing" if status_file else "give -c FILE to wait for it"
        _out(f"Sent SIGHUP to pid {pid}: it reloads and logs the outcome ({where})")
        return EXIT_OK
    outcome = reload_status.wait_outcome(status_file, before.serial, pid, args.timeout)
    if outcome.state == reload_status.FAILED:
        for line in outcome.message.splitlines():
            _err(f"tunnel: reload failed: {line}")
        return EXIT_FAILURE
    _out(f"Reloaded pid {pid}: {outcome.message}")
    return EXIT_OK


# --------------------------------------------------------------------------- check


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


def _plane_line(listener: ListenerConfig, backends: dict[str, BackendConfig]) -> str:
    plane, why = fastplane.choose(listener, backends)
    return f"    data plane: {plane}" + (f" ({why})" if why else "")


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
    for listener in config.listeners:
        lines += _listener_summary(listener)
        if listener.acme and config.acme is not None:
            lines.append(f"    {acme_listener_line(listener.acme, config.acme)}")
        lines.append(_plane_line(listener, {b.name: b for b in config.backends}))
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
    for line in lines:
        _out(line)
    for warning in warnings:
        _err(warning)
    return EXIT_OK


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    """``tunnel status``: summarise a running Tunnel; exit 1 unless it is ready."""
    from tunnel.cli import status  # prometheus_client's parser: kept out of `tunnel run`

    return status.cmd_status(args)


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """``tunnel demo``: self-signed certificate, built-in backend, one listener."""
    from tunnel.cli import demo  # cryptography and the demo backend: kept out of `tunnel run`

    return demo.cmd_demo(args)


# --------------------------------------------------------------------------- gen-cert


def cmd_gen_cert(args: argparse.Namespace) -> int:
    """``tunnel gen-cert``: write a self-signed certificate and key as one PEM file."""
    from tunnel.cli import gen_cert  # cryptography: kept out of `tunnel run`

    return gen_cert.cmd_gen_cert(args)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tunnel`` command."""
    parser = argparse.ArgumentParser(
        prog="tunnel", description="Tunnel: a lightweight TLS terminator."
    )
    parser.add_argument("--version", action="version", version=f"tunnel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="serve the configured listeners")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="override [tunnel] log_level")
    run.add_argument(
        "--daemon", action="store_true", help="detach once serving (as 'daemon = yes')"
    )
    run.set_defaults(func=cmd_run)

    rel = sub.add_parser("reload", help="make a running Tunnel re-read its configuration")
    rel.add_argument(
        "-c", "--config", metavar="FILE", help="validate FILE; its pid_file finds Tunnel"
    )
    rel.add_argument("--pid", type=int, metavar="PID", help="the supervisor's process id")
    rel.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the outcome (default 30)",
    )
    rel.set_defaults(func=cmd_reload)

    check = sub.add_parser("check", help="validate a configuration without serving")
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    check.set_defaults(func=cmd_check)

    stat = sub.add_parser(
        "status",
        help="summarise a running Tunnel (its admin endpoint); exit 1 unless it is ready",
    )
    where = stat.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE", help="read [tunnel] admin from FILE")
    where.add_argument("--admin", metavar="HOST:PORT", help="the admin endpoint's address")
    stat.set_defaults(func=cmd_status)

    dem = sub.add_parser("demo", help="run a self-contained demo on https://localhost:8443/")
    dem.add_argument("--port", type=int, default=8443, help="port to accept on (default 8443)")
    dem.add_argument("--host", default="127.0.0.1", help="address to accept on (127.0.0.1)")
    dem.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default info")
    dem.set_defaults(func=cmd_demo)

    gen = sub.add_parser("gen-cert", help="write a self-signed certificate and key (PEM)")
    # Not demo.default_cert_path(): importing the demo would load cryptography for every command.
    gen.add_argument(
        "--out",
        metavar="PATH",
        help="default: $XDG_STATE_HOME/tunnel/demo.pem, else ~/.local/state/tunnel/demo.pem",
    )
    gen.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="DNS name or IP address; repeatable (default: localhost, 127.0.0.1, ::1)",
    )
    gen.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    gen.add_argument("--force", action="store_true", help="replace an existing file")
    gen.set_defaults(func=cmd_gen_cert)
    return parser


def _report_config_errors(errors: Sequence[ConfigError], args: argparse.Namespace) -> None:
    for error in errors:
        _err(f"error: {error}")
    config = getattr(args, "config", None)
    count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
    if args.command == "check" or not config:
        _err(f"tunnel: {count} found; fix them and run this command again")
    else:
        _err(f"tunnel: {count} found; fix them, then run 'tunnel check -c {config}'")


def _dispatch(args: argparse.Namespace) -> int:
    func: Command = args.func
    try:
        return func(args)
    except ConfigErrors as exc:
        _report_config_errors(exc.errors, args)
        return EXIT_CONFIG
    except ConfigError as exc:
        _report_config_errors([exc], args)
        return EXIT_CONFIG
    except UsageError as exc:
        _err(f"tunnel {args.command}: error: {exc}")
        return EXIT_CONFIG
    except service.StartFailed as exc:
        for line in str(exc).splitlines():
            _err(f"tunnel: error: {line}")
        return exc.code
    except TunnelError as exc:
        _err(f"tunnel: error: {exc}")
        return EXIT_FAILURE
    except OSError as exc:
        _err(f"tunnel: error: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("tunnel: interrupted")
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Run the ``tunnel`` command line; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    return _dispatch(args)
