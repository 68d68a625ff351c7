"""Which data plane ``tunnel run`` and ``tunnel check`` use, and what they say about it.

The compiled plane is the default wherever the extension was built. Where it cannot be
imported (``pip install`` on a machine without a C compiler), Tunnel serves on the Python
plane and says so once at start and in ``tunnel check``. The missing extension is
simulated by a ``sitecustomize`` that makes importing it fail in the tunnel's processes.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from harness.http import read_all, routing_handler, slow_body, start_slow_transfer, tls_client
from harness.process import generation_line

from .conftest import Backend, Certs, Launcher, start_run, write_config

pytestmark = pytest.mark.timeout(60)

NOT_BUILT = "the compiled data plane is not built (simulated: built without a C compiler)"
BLOCKER = '''"""Test only: importing the compiled data plane fails, as where it was not built."""
import sys


class NoCompiledPlane:
    def find_spec(self, name, path=None, target=None):
        if name == "tunnel.dataplane._fastplane":
            raise ImportError("simulated: built without a C compiler")
        return None


sys.meta_path.insert(0, NoCompiledPlane())
'''


def without_extension(tunnel: Launcher, tmp_path: Path) -> None:
    """The tunnel's processes cannot import the extension; nobody chose a plane."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    tunnel.env["PYTHONPATH"] = f"{site}{os.pathsep}{tunnel.env['PYTHONPATH']}"
    tunnel.env.pop("TUNNEL_DATAPLANE", None)


def test_without_the_extension_tunnel_serves_on_the_python_plane_and_says_so_once(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    without_extension(tunnel, tmp_path)
    running = start_run(tunnel, tmp_path, certs, hello_backend, workers="2")
    with tls_client(running) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_all(sock).endswith(b"hello from the backend\n")
    running.proc.wait_log(r"worker 1 started")
    log = running.proc.log()
    assert log.count(f"data plane: python for every listener ({NOT_BUILT})") == 1, log
    assert "WARNING" not in log  # not asked for by name: nothing to fix
    assert "web: compiled data plane" not in log

    result = tunnel.run("check", "-c", str(tmp_path / "tunnel.ini"))
    assert result.returncode == 0, result.stderr
    assert f"data plane: python ({NOT_BUILT})" in result.stdout
    assert "WARN" not in result.stdout + result.stderr


def test_asking_for_the_missing_compiled_plane_warns_and_still_serves(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    without_extension(tunnel, tmp_path)
    tunnel.env["TUNNEL_DATAPLANE"] = "compiled"
    running = start_run(tunnel, tmp_path, certs, hello_backend)
    with tls_client(running) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_all(sock).endswith(b"hello from the backend\n")
    why = f"TUNNEL_DATAPLANE=compiled, but {NOT_BUILT}"
    assert f"data plane: python for every listener ({why})" in running.proc.log()

    result = tunnel.run("check", "-c", str(tmp_path / "tunnel.ini"))
    assert result.returncode == 0, result.stderr
    assert f"WARN: {why}: the Python data plane serves every listener" in (
        result.stdout + result.stderr
    )


def test_the_config_key_chooses_and_the_variable_wins(
    tunnel: Launcher, tmp_path: Path, certs: Certs
) -> None:
    config = write_config(tmp_path / "python.ini", certs, 0, 8080, dataplane="python")
    tunnel.env.pop("TUNNEL_DATAPLANE", None)
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "data plane: python (dataplane = python)" in result.stdout
    tunnel.env["TUNNEL_DATAPLANE"] = "python"
    default = write_config(tmp_path / "default.ini", certs, 0, 8080)
    result = tunnel.run("check", "-c", str(default))
    assert "data plane: python (TUNNEL_DATAPLANE=python)" in result.stdout

    typo = write_config(tmp_path / "typo.ini", certs, 0, 8080, dataplane="compile")
    result = tunnel.run("check", "-c", str(typo))
    assert result.returncode != 0
    assert "dataplane" in result.stderr and "auto, compiled, python" in result.stderr


def test_a_reload_switches_planes_and_the_old_generation_drains(
    tunnel: Launcher,
    tmp_path: Path,
    certs: Certs,
    backend_factory: Callable[[Callable[[socket.socket], None]], Backend],
) -> None:
    """The key takes effect at a reload: the compiled generation drains its transfer while
    the new one serves on the Python plane, and back."""
    pytest.importorskip("tunnel.dataplane._fastplane")
    tunnel.env.pop("TUNNEL_DATAPLANE", None)
    running = start_run(tunnel, tmp_path, certs, backend_factory(routing_handler), workers="2")
    assert "listener web: compiled data plane" in running.proc.log()
    text = running.config.read_text()
    sock, first = start_slow_transfer(running)
    with sock:
        offset = len(running.proc.log())
        running.config.write_text(text.replace("[tunnel]\n", "[tunnel]\ndataplane = python\n"))
        running.proc.signal(signal.SIGHUP)
        running.proc.wait_log(generation_line(2), start=offset)
        log = running.proc.log()[offset:]
        assert "data plane: python for every listener (dataplane = python)" in log
        with tls_client(running) as other:
            other.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_all(other).endswith(b"hello from the backend\n")
        assert read_all(sock, first).partition(b"\r\n\r\n")[2] == slow_body()
    offset = len(running.proc.log())
    running.config.write_text(text)
    running.proc.signal(signal.SIGHUP)
    running.proc.wait_log(generation_line(3), start=offset)
    assert "listener web: compiled data plane" in running.proc.log()[offset:]
    with tls_client(running) as other:
        other.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_all(other).endswith(b"hello from the backend\n")


UVLOOP_BLOCKER = '''"""Test only: uvloop cannot be imported (as by a user who may not read it)."""
import sys


class NoUvloop:
    def find_spec(self, name, path=None, target=None):
        if name == "uvloop":
            raise ImportError("simulated: uvloop cannot be imported")
        return None


sys.meta_path.insert(0, NoUvloop())
'''


def test_compiled_workers_need_no_uvloop_and_a_reload_that_does_fails_cleanly(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    """Only the Python plane's loop is uvloop's: without it a compiled-only instance
    serves, and a reload to the Python plane fails as a transaction (nothing changes)."""
    pytest.importorskip("tunnel.dataplane._fastplane")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(UVLOOP_BLOCKER)
    tunnel.env["PYTHONPATH"] = f"{site}{os.pathsep}{tunnel.env['PYTHONPATH']}"
    tunnel.env.pop("TUNNEL_DATAPLANE", None)
    running = start_run(tunnel, tmp_path, certs, hello_backend, workers="1")
    assert "listener web: compiled data plane" in running.proc.log()
    text = running.config.read_text()
    running.config.write_text(text.replace("[tunnel]\n", "[tunnel]\ndataplane = python\n"))
    offset = len(running.proc.log())
    running.proc.signal(signal.SIGHUP)
    problem = running.proc.wait_log(r"reload failed: (.*)", start=offset).group(1)
    assert "uvloop" in problem
    assert generation_line(2) not in running.proc.log()
    with tls_client(running) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_all(client).endswith(b"hello from the backend\n")
