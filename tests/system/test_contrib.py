"""The shipped service files: the SysV init script driven for real, the systemd units parsed."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.http import fetch

from .conftest import REPO, Backend, Certs, Launcher, alive, reserve_port, wait_for, write_config

pytestmark = pytest.mark.timeout(90)

CONTRIB = REPO / "contrib"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)  # ListenStream repeats
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / name)
    return parser


def test_service_unit() -> None:
    service = unit("tunnel.service")["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("tunnel run -c /etc/tunnel/tunnel.ini")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"


def test_socket_unit() -> None:
    sockets = unit("tunnel.socket")
    assert sockets["Socket"]["Service"] == "tunnel.service"
    assert sockets["Install"]["WantedBy"] == "sockets.target"


def test_init_script(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    script = CONTRIB / "tunnel.init"
    assert os.access(script, os.X_OK)
    assert subprocess.run([sh, "-n", str(script)], check=False).returncode == 0
    port, pid_file, log = reserve_port(), tmp_path / "run" / "t.pid", tmp_path / "t.log"
    config = write_config(
        tmp_path / "t.ini",
        certs,
        port,
        hello_backend.port,
        pid_file=str(pid_file),
        log_target="file",
        log_file=str(log),
    )
    wrapper = tmp_path / "tunnel-bin"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tunnel "$@"\n')
    wrapper.chmod(0o755)
    env = {**tunnel.env, "DAEMON": str(wrapper), "CONFIG": str(config), "PIDFILE": str(pid_file)}

    def init(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), action], env=env, capture_output=True, text=True, timeout=60
        )

    assert init("status").returncode == 3
    pid = 0
    try:
        started = init("start")
        assert started.returncode == 0, started.stderr
        pid = int(pid_file.read_text())
        assert init("status").stdout.strip() == f"tunnel is running (pid {pid})"
        assert fetch(port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
        reloaded = init("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        wait_for("the reload", lambda: "generation 2 serving" in log.read_text())
        assert init("stop").returncode == 0
        assert not alive(pid)
        assert init("status").returncode == 3
    finally:
        if pid and alive(pid):
            os.kill(pid, 9)
