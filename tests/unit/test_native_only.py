"""Every ctypes use lives in tunnel._native (the one room whose layout probes guard it)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tunnel"


def imports_ctypes(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "ctypes" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ctypes":
            return True
    return False


def test_ctypes_only_in_native() -> None:
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if imports_ctypes(p))
    assert users, "the scan found no ctypes use at all: is SRC right?"
    assert [u for u in users if not u.startswith("_native/")] == []
