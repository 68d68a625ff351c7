"""The man pages describe every configuration key and every subcommand."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tunnel.cli.main import build_parser
from tunnel.config import KEYS, Key, Scope

DOCS = Path(__file__).resolve().parents[2] / "docs"
# The man page's section for each scope of the schema (tunnel.config.schema).
MAN_SECTIONS = {
    Scope.TUNNEL: '"[tunnel] SECTION"',
    Scope.LISTENER: '"LISTENER SECTIONS"',
    Scope.DEFAULT: '"LISTENER SECTIONS"',
    Scope.BACKEND: '"[backend:NAME] SECTIONS"',
    Scope.ACME: '"[acme] SECTION"',
}


def man_section(text: str, title: str) -> str:
    return text.split(f".SH {title}\n", 1)[1].split("\n.SH ", 1)[0]


def placements() -> list[tuple[str, Scope]]:
    """(key, scope) for every scope each schema key is declared in."""
    return [(key.name, scope) for key in KEYS for scope in MAN_SECTIONS if key.scope & scope]


def subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no subcommands")


def roff_name(name: str) -> str:
    return re.escape(name.replace("-", r"\-"))


@pytest.mark.parametrize(("key", "scope"), placements())
def test_every_config_key_in_tunnel_ini_5(key: str, scope: Scope) -> None:
    """Each key is described in the man page's section for where it may be written."""
    title = MAN_SECTIONS[scope]
    text = man_section((DOCS / "tunnel.ini.5").read_text(), title)
    entry = re.compile(rf"^\.TP\n\.B {roff_name(key)}\n", re.MULTILINE)
    if scope is Scope.BACKEND and any(
        k.name == key and k.scope & (Scope.LISTENER | Scope.DEFAULT) for k in KEYS
    ):
        # Shared with listeners: the backend section may refer to the listener's entry.
        entry = re.compile(rf"\b{roff_name(key)}\b")
    assert entry.search(text), f"docs/tunnel.ini.5 {title} does not describe {key!r}"


def test_schema_placements_cover_every_key() -> None:
    assert {name for name, _ in placements()} == {key.name for key in KEYS}
    assert all(isinstance(key, Key) and key.doc for key in KEYS)


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
