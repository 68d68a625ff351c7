"""Error hints fit the error: missing vs unreadable certificate, --pid vs a stale pid file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.cli.main import main
from tunnel.config import Address, ListenerConfig
from tunnel.errors import TLSSetupError
from tunnel.tls.contexts import build_server_context
from tunnel.tls.secret_files import write_private_file
from tunnel.tls.selfsigned import make_self_signed

pytestmark = pytest.mark.timeout(30)


def listener(cert: Path) -> ListenerConfig:
    return ListenerConfig(
        name="web",
        accept=(Address("tcp", host="127.0.0.1", port=1),),
        cert=(str(cert),),
        key=None,
        connect=(Address("tcp", host="127.0.0.1", port=2),),
    )


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_missing_certificate_suggests_gen_cert(tmp_path: Path) -> None:
    with pytest.raises(TLSSetupError) as caught:
        build_server_context(listener(tmp_path / "nope.pem"))
    assert "does not exist" in str(caught.value) and "tunnel gen-cert" in str(caught.value)


def test_unreadable_certificate_does_not_suggest_gen_cert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = tmp_path / "cert.pem"
    write_private_file(cert, make_self_signed(["localhost"]))
    cert.chmod(0)
    real_access = os.access
    # Root reads every file whatever its mode: ask os.access as an ordinary user would.
    monkeypatch.setattr(os, "access", lambda p, m: p != str(cert) and real_access(p, m))
    with pytest.raises(TLSSetupError) as caught:
        build_server_context(listener(cert))
    text = str(caught.value)
    assert "is not readable" in text and "let the user running Tunnel read it" in text
    assert "gen-cert" not in text


def test_reload_pid_of_no_process(capsys: pytest.CaptureFixture[str]) -> None:
    pid = dead_pid()
    assert main(["reload", "--pid", str(pid)]) == 1
    error = capsys.readouterr().err
    assert f"no process {pid}: check the process id given to --pid" in error
    assert "pid file" not in error


def test_reload_with_a_stale_pid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "cert.pem"
    write_private_file(cert, make_self_signed(["localhost"]))
    pid_file = tmp_path / "t.pid"
    pid_file.write_text(f"{dead_pid()}\n")
    config = tmp_path / "t.ini"
    config.write_text(
        f"[tunnel]\npid_file = {pid_file}\n\n"
        f"[web]\naccept = 127.0.0.1:1\nconnect = 127.0.0.1:2\ncert = {cert}\n"
    )
    assert main(["reload", "-c", str(config)]) == 1
    assert f"(the pid file {pid_file} is stale)" in capsys.readouterr().err
