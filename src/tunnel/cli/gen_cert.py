"""``tunnel gen-cert``: write a self-signed certificate and its key as one PEM file (0600).

Also the home of Tunnel's per-user state directory, where ``gen-cert`` and ``tunnel demo``
keep the demo certificate by default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunnel.cli.common import EXIT_OK, UsageError, out
from tunnel.errors import TunnelError
from tunnel.tls.secret_files import write_private_file
from tunnel.tls.selfsigned import DEFAULT_NAMES, check_name, make_self_signed

CERT_FILE = "demo.pem"


def state_dir() -> Path:
    """Tunnel's per-user state directory: ``$XDG_STATE_HOME/tunnel`` or ~/.local/state/tunnel."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec says to ignore relative values
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tunnel"


def default_cert_path() -> Path:
    """Where ``tunnel demo`` and ``tunnel gen-cert`` keep the demo certificate."""
    return state_dir() / CERT_FILE


def cmd_gen_cert(args: argparse.Namespace) -> int:
    """``tunnel gen-cert``: write a self-signed certificate and key as one PEM file."""
    path = Path(os.path.expanduser(args.out)) if args.out else default_cert_path()
    names = args.name or list(DEFAULT_NAMES)
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    for name in names:
        try:
            check_name(name)
        except ValueError as exc:
            raise UsageError(f"--name: {exc}") from None
    try:
        write_private_file(path, make_self_signed(names, days=args.days), force=args.force)
    except FileExistsError:
        raise UsageError(f"{path} exists; use --force to replace it") from None
    except OSError as exc:
        raise TunnelError(f"cannot write {path}: {exc.strerror or exc}") from None
    out(f"Wrote a self-signed certificate and key (mode 0600) to {path}")
    out(f"  names: {', '.join(names)}; valid for {args.days} days")
    return EXIT_OK
