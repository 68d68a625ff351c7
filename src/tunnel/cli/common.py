"""What every ``tunnel`` subcommand shares: exit codes, the usage error, printing."""

from __future__ import annotations

import sys

from tunnel.errors import TunnelError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class UsageError(TunnelError):
    """A bad command-line argument (exit code 2)."""


def err(text: str) -> None:
    """Print a line to stderr (errors and warnings)."""
    print(text, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    """Print a line to stdout (what the command reports)."""
    print(text, flush=True)


def report(lines: list[str], warnings: list[str]) -> None:
    """Print a command's summary to stdout, then its warnings to stderr."""
    for line in lines:
        out(line)
    for warning in warnings:
        err(warning)
