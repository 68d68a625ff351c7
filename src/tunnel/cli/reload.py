"""``tunnel reload``: validate the configuration, signal the running Tunnel, await the outcome."""

from __future__ import annotations

import argparse
import os
import signal

from tunnel.cli.common import EXIT_FAILURE, EXIT_OK, UsageError, err, out
from tunnel.config import Config, load_config
from tunnel.errors import ConfigError, TunnelError
from tunnel.process import generation, reload_status
from tunnel.process.pidfile import read_pid


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
        out(f"Sent SIGHUP to pid {pid}: it reloads and logs the outcome ({where})")
        return EXIT_OK
    outcome = reload_status.wait_outcome(status_file, before.serial, pid, args.timeout)
    if outcome.state == reload_status.FAILED:
        for line in outcome.message.splitlines():
            err(f"tunnel: reload failed: {line}")
        return EXIT_FAILURE
    out(f"Reloaded pid {pid}: {outcome.message}")
    return EXIT_OK
