"""Files the dropped-to ``user`` could not re-read on reload: check warns, run refuses.

The tests run as root and drop to ``nobody``, whose only group is ``nogroup``; the files
live under a world-passable directory (tmp_path is private to root).
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
from pathlib import Path

import pytest
from harness.http import fetch
from harness.process import generation_line

from .conftest import Backend, Certs, Launcher, port_accepts, wait_for

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root"),
]


def nobody_group() -> int:
    return pwd.getpwnam("nobody").pw_gid


def write_files(directory: Path, certs: Certs) -> dict[str, Path]:
    """The configuration's files besides cert and key: a client CA and a ticket key file."""
    tickets = directory / "tickets.key"
    tickets.write_bytes(os.urandom(80))
    return {"client_ca": certs.ca_pem, "ticket_key_file": tickets}


def write_ini(path: Path, certs: Certs, files: dict[str, Path], backend_port: int) -> Path:
    """A configuration that drops to nobody (and refuses to stay root)."""
    path.write_text(
        "[tunnel]\nworkers = 1\nuser = nobody\nallow_root = no\ndrain_timeout = 5s\n\n"
        f"[web]\naccept = 127.0.0.1:0\ncert = {certs.cert_pem}\n"
        f"key = {certs.key_pem}\nconnect = 127.0.0.1:{backend_port}\n"
        + "".join(f"{key} = {value}\n" for key, value in files.items())
        + ("verify = optional\n" if "client_ca" in files else "")
    )
    path.chmod(0o644)
    return path


def test_check_warns_and_run_refuses_files_nobody_cannot_read(
    tunnel: Launcher, public_dir: Path, public_certs: Certs
) -> None:
    certs = public_certs
    files = write_files(public_dir, certs)
    os.chown(certs.key_pem, 0, 0)
    certs.key_pem.chmod(0o600)  # root's only
    files["ticket_key_file"].chmod(0o600)
    config = write_ini(public_dir / "t.ini", certs, files, 8080)
    group = grp.getgrgid(nobody_group()).gr_name

    check = tunnel.run("check", "-c", str(config))
    assert check.returncode == 0, check.stderr
    warnings = [line for line in check.stderr.splitlines() if line.startswith("WARN")]
    assert len(warnings) == 2, check.stderr
    key_warning, tickets_warning = warnings
    assert key_warning.startswith(f"WARN: {config}: [web] key: {certs.key_pem}: it is not")
    assert f"not readable by user nobody (group {group})" in key_warning
    assert "a reload reads it again as that user" in key_warning
    assert f"chgrp {group} {certs.key_pem} && chmod g+r {certs.key_pem}" in key_warning
    assert "'tunnel run' would refuse to start" in key_warning
    assert f"[web] ticket_key_file: {files['ticket_key_file']}: it is" in tickets_warning
    assert "workers re-read it as that user every few seconds" in tickets_warning

    run = tunnel.run("run", "-c", str(config), timeout=30)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {w.removeprefix('WARN: ').split(' -- ')[0]}" for w in warnings]


def test_unsearchable_directory_and_config_file_are_reported(
    tunnel: Launcher, public_dir: Path, public_certs: Certs
) -> None:
    certs = public_certs
    (public_dir / "certs").chmod(0o750)  # root:root: nobody cannot pass through it
    config = write_ini(public_dir / "t.ini", certs, {}, 8080)
    config.chmod(0o600)

    run = tunnel.run("run", "-c", str(config), timeout=30)
    assert run.returncode == 2
    assert f"error: {config}: {config}: it is not readable by user nobody" in run.stderr
    blocked = f"its directory {public_dir / 'certs'} is not searchable (x) by user nobody"
    assert f"[web] cert: {certs.cert_pem}: {blocked}" in run.stderr
    assert f"[web] key: {certs.key_pem}: {blocked}" in run.stderr
    assert f"chmod g+x {public_dir / 'certs'}" in run.stderr
    assert "tunnel: 3 problems found" in run.stderr


def test_readable_files_pass_and_a_reload_as_nobody_reads_them(
    tunnel: Launcher, public_dir: Path, public_certs: Certs, hello_backend: Backend
) -> None:
    certs = public_certs
    files = write_files(public_dir, certs)
    files["ticket_key_file"].chmod(0o644)
    config = write_ini(public_dir / "t.ini", certs, files, hello_backend.port)

    check = tunnel.run("check", "-c", str(config))
    assert check.returncode == 0, check.stderr
    assert "WARN" not in check.stderr

    proc = tunnel.start("run", "-c", str(config))
    proc.wait_log(r"running as uid \d+")
    proc.wait_log(r"tunnel started")
    port = proc.bound_port("web")
    wait_for(f"port {port} to accept", lambda: port_accepts(port))
    proc.signal(signal.SIGHUP)  # the key is read again, as nobody, through its group
    proc.wait_log(generation_line(2))
    assert "reload failed" not in proc.stderr()
    assert fetch(port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
