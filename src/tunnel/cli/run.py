"""``tunnel run``: serve the configured listeners, in the foreground or as a daemon."""

from __future__ import annotations

import argparse
import os

from tunnel.cli.common import out
from tunnel.config import Config, load_config
from tunnel.errors import ConfigError
from tunnel.observe.log import setup_from_settings
from tunnel.process import service


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
        out(f"started, pid {pid}, log: {_log_destination(config)}")

    return service.run_service(
        config, log_level=args.log_level, daemon=args.daemon, announce=announce
    )
