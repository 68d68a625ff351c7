"""The package's rooms and the one direction imports may run between them.

cli -> process -> dataplane -> observe -> tls -> config -> wire -> _native: a module may
import its own room and the rooms after it, never one before. ``tunnel.errors`` is a leaf
every room may use except ``wire`` and ``_native``, which import nothing of Tunnel's.
Imports inside functions count too: a lazy import that runs upwards is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tunnel"
ORDER = ["cli", "process", "dataplane", "observe", "tls", "config", "wire", "_native"]
PURE = {"wire", "_native"}


def room_of(module: str) -> str:
    """``tunnel.dataplane.relay`` -> ``dataplane``; top-level modules are their own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        found.append((name.removesuffix(".__init__"), path))
    return found


def tunnel_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``tunnel...`` module the file imports, with its line."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("tunnel")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tunnel":
                out += [(node.lineno, f"tunnel.{a.name}") for a in node.names]
            elif node.module.startswith("tunnel."):
                out.append((node.lineno, node.module))
    return out


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""
    src, dst = room_of(importer), room_of(imported)
    if src == dst or imported == "tunnel.__version__":
        return None
    if src in PURE and dst not in ORDER[ORDER.index(src) :]:
        return f"{src} imports nothing of Tunnel's but its own room and those below"
    if dst == "errors" or src not in ORDER:
        return None  # the leaf every room shares; top-level modules (__main__) import freely
    if dst not in ORDER:
        return f"{imported} is not in any room"
    if ORDER.index(dst) < ORDER.index(src):
        return f"{src} may not import {dst}: imports run {' -> '.join(ORDER)}"
    return None


def test_every_module_lives_in_a_room() -> None:
    loose = [name for name, _ in modules() if room_of(name) not in [*ORDER, "", "errors"]]
    loose = [n for n in loose if n not in ("tunnel.__main__",)]
    assert not loose, f"modules outside the rooms: {loose}"


def test_every_room_says_what_it_is_for() -> None:
    for room in ORDER:
        init = SRC / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc, f"{init} must say what the room is for and may import"


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_run_downwards(name: str, path: Path) -> None:
    wrong = [
        f"{path.name}:{line}: {target}: {why}"
        for line, target in tunnel_imports(path)
        if (why := violation(name, target))
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("tunnel.dataplane.relay", "tunnel.observe.metrics", True),
        ("tunnel.observe.metrics", "tunnel.dataplane.relay", False),
        ("tunnel.config.parser", "tunnel.tls.contexts", False),
        ("tunnel.wire.proxy_protocol", "tunnel.errors", False),
        ("tunnel._native.bio", "tunnel._native.openssl", True),
        ("tunnel.cli.main", "tunnel.process.service", True),
        ("tunnel.process.supervisor", "tunnel.cli.main", False),
        ("tunnel.tls.contexts", "tunnel.errors", True),
    ],
)
def test_the_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    assert (violation(importer, imported) is None) is allowed
