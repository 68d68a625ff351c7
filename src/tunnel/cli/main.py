"""Command line: ``tunnel run | check | reload | status | demo | gen-cert``.

:func:`main` parses the command line and runs one subcommand, each in its own module of
this package (``run``, ``check``, ``reload``, ``status``, ``demo``, ``gen_cert``). The CLI
is the only code in Tunnel that prints to the user or decides the exit code: 0 success,
1 a runtime failure, 2 a configuration or usage mistake, 130 Ctrl-C before serving began.
User mistakes never end in a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from tunnel import __version__
from tunnel.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    UsageError,
)
from tunnel.cli.common import err as _err
from tunnel.config import LOG_LEVELS
from tunnel.errors import ConfigError, ConfigErrors, TunnelError
from tunnel.process import service

Command = Callable[[argparse.Namespace], int]


def _later(module: str, name: str) -> Command:
    """The function ``name`` of ``tunnel.cli.<module>``, imported when the command runs.

    So a command loads only what it needs: ``tunnel run`` never loads the demo's
    cryptography or the status command's Prometheus parser (see test_footprint.py).
    """

    def command(args: argparse.Namespace) -> int:
        function = getattr(importlib.import_module(f"tunnel.cli.{module}"), name)
        return cast(Command, function)(args)

    return command


# --------------------------------------------------------------------------- parser


def _columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing ``shutil``.

    argparse's formatter (made for every ``add_argument``) imports ``shutil``, and with it
    ``bz2``, ``lzma`` and ``zlib``: ~230 KiB of heap in every serving process, for the
    width of a help text that ``tunnel run`` never prints.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the terminal's width (see :func:`_columns`)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width  # what argparse itself does
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tunnel`` command."""
    parser = argparse.ArgumentParser(
        prog="tunnel",
        description="Tunnel: a lightweight TLS terminator.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"tunnel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="serve the configured listeners", formatter_class=_Formatter)
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="override [tunnel] log_level")
    run.add_argument(
        "--daemon", action="store_true", help="detach once serving (as 'daemon = yes')"
    )
    run.set_defaults(func=_later("run", "cmd_run"))

    rel = sub.add_parser(
        "reload",
        help="make a running Tunnel re-read its configuration",
        formatter_class=_Formatter,
    )
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
    rel.set_defaults(func=_later("reload", "cmd_reload"))

    check = sub.add_parser(
        "check", help="validate a configuration without serving", formatter_class=_Formatter
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration file")
    check.set_defaults(func=_later("check", "cmd_check"))

    stat = sub.add_parser(
        "status",
        help="summarise a running Tunnel (its admin endpoint); exit 1 unless it is ready",
        formatter_class=_Formatter,
    )
    where = stat.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE", help="read [tunnel] admin from FILE")
    where.add_argument("--admin", metavar="HOST:PORT", help="the admin endpoint's address")
    stat.set_defaults(func=_later("status", "cmd_status"))

    dem = sub.add_parser(
        "demo",
        help="run a self-contained demo on https://localhost:8443/",
        formatter_class=_Formatter,
    )
    dem.add_argument("--port", type=int, default=8443, help="port to accept on (default 8443)")
    dem.add_argument("--host", default="127.0.0.1", help="address to accept on (127.0.0.1)")
    dem.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default info")
    dem.set_defaults(func=_later("demo", "cmd_demo"))

    gen = sub.add_parser(
        "gen-cert",
        help="write a self-signed certificate and key (PEM)",
        formatter_class=_Formatter,
    )
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
    gen.set_defaults(func=_later("gen_cert", "cmd_gen_cert"))
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
