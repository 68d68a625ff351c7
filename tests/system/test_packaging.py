"""``python -m build`` makes a wheel and an sdist with what users need."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from tunnel import __version__

from .conftest import REPO

pytestmark = pytest.mark.timeout(120)

SHIPPED = ["pyproject.toml", "README.md", "MANIFEST.in", "tunnel.ini", "Containerfile"]
SHIPPED_DIRS = ["src", "contrib", "docs", "deploy"]


def test_wheel_and_sdist(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (pip install -e '.[dev]')")
    if int(version("setuptools").split(".")[0]) < 68:
        pytest.skip("setuptools >= 68 is needed for a build without isolation")
    tree = tmp_path / "tree"  # a copy, so that the build leaves nothing in the checkout
    tree.mkdir()
    for name in SHIPPED:
        shutil.copy2(REPO / name, tree / name)
    for name in SHIPPED_DIRS:
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    assert wheel.name == f"tunnel-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"tunnel-{__version__}.dist-info"
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    rooms = {f"tunnel/{d.name}/__init__.py" for d in (REPO / "src" / "tunnel").iterdir()}
    rooms = {r for r in rooms if (REPO / "src" / r).exists()}
    assert {"tunnel/__init__.py", "tunnel/cli/main.py", "tunnel/py.typed"} | rooms <= names
    assert "tunnel = tunnel.cli.main:main" in entry_points
    assert f"\nVersion: {__version__}\n" in metadata
    with tarfile.open(sdist) as tf:
        members = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    expected = {
        "tunnel.ini",
        "contrib/tunnel.service",
        "contrib/tunnel.init",
        "docs/tunnel.8",
        "docs/tunnel.ini.5",
        "deploy/kubernetes.yaml",
        "src/tunnel/cli/main.py",
    }
    assert expected <= members
