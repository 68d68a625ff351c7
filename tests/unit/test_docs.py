"""The man pages describe every configuration key and every subcommand."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tunnel.cli.main import build_parser
from tunnel.config import parser as config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def all_config_keys() -> list[str]:
    """Every key of every ``*_KEYS`` set in tunnel.config (tunnel, listener, backend...)."""
    keys: set[str] = set()
    for name in dir(config):
        value = getattr(config, name)
        if name.endswith("_KEYS") and isinstance(value, frozenset):
            keys |= {key for key in value if isinstance(key, str)}
    return sorted(keys)


def subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no subcommands")


def roff_name(name: str) -> str:
    return re.escape(name.replace("-", r"\-"))


@pytest.mark.parametrize("key", all_config_keys())
def test_every_config_key_in_tunnel_ini_5(key: str) -> None:
    text = (DOCS / "tunnel.ini.5").read_text()
    entry = re.compile(rf"^\.TP\n\.B {roff_name(key)}\n", re.MULTILINE)
    assert entry.search(text), f"docs/tunnel.ini.5 does not describe {key!r}: add '.TP/.B {key}'"


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_in_tunnel_8(command: str) -> None:
    text = (DOCS / "tunnel.8").read_text()
    commands = text.split(".SH COMMANDS", 1)[1].split(".SH ", 1)[0]
    entry = re.compile(rf"^\.TP\n\.B {roff_name(command)}\n", re.MULTILINE)
    assert entry.search(commands), f"docs/tunnel.8 does not describe 'tunnel {command}'"
    assert re.search(rf"^\.B tunnel {roff_name(command)}$", text, re.MULTILINE), (
        f"docs/tunnel.8's SYNOPSIS lacks 'tunnel {command}'"
    )


@pytest.mark.parametrize("page", ["tunnel.8", "tunnel.ini.5"])
def test_man_pages_render_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", str(DOCS / page)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr == ""
