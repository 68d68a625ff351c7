"""Running as a service: daemon mode, pid file, privileges, systemd notify and sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.http import fetch

from .conftest import (
    Backend,
    Certs,
    Launcher,
    alive,
    children_of,
    port_accepts,
    reserve_port,
    start_run,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(90)


@contextlib.contextmanager
def stopped_at_end(pid_file: Path) -> Iterator[None]:
    """Stop the daemon named in ``pid_file`` (and its workers) whatever happens."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            workers = children_of(pid)
            for _ in range(2):
                os.kill(pid, signal.SIGTERM)
            wait_for("the daemon to exit", lambda: not alive(pid), timeout=10)
            for worker in workers:
                if alive(worker):
                    os.kill(worker, signal.SIGKILL)


def test_daemon_detaches_and_stops(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    port, pid_file, log = reserve_port(), tmp_path / "t.pid", tmp_path / "t.log"
    config = write_config(
        tmp_path / "t.ini",
        certs,
        port,
        hello_backend.port,
        pid_file=str(pid_file),
        log_target="file",
        log_file=str(log),
    )
    with stopped_at_end(pid_file):
        result = tunnel.run("run", "-c", str(config), "--daemon", timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        pid = int(pid_file.read_text())  # written before the original process returned
        assert alive(pid)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"
        assert os.getsid(pid) != pid  # not a session leader: can never get a terminal
        assert os.getsid(pid) != os.getsid(0)
        assert port_accepts(port)
        assert fetch(port, certs.ca_pem)[1].endswith(b"hello from the backend\n")

        again = tunnel.run("run", "-c", str(config), "--daemon", timeout=30)
        assert again.returncode == 1
        assert f"already running (pid {pid} holds the pid file {pid_file})" in again.stderr

        os.kill(pid, signal.SIGTERM)
        wait_for("the daemon to exit", lambda: not alive(pid))
        wait_for("the pid file to go", lambda: not pid_file.exists())
        assert "tunnel stopped" in log.read_text()


def test_daemon_start_up_error_reaches_the_terminal(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    # The pid file can only be written by the daemon (it holds the daemon's pid): a
    # directory that does not exist makes that fail after detaching.
    pid_file = tmp_path / "missing" / "t.pid"
    config = write_config(
        tmp_path / "t.ini", certs, reserve_port(), hello_backend.port, pid_file=str(pid_file)
    )
    result = tunnel.run("run", "-c", str(config), "--daemon", timeout=30)
    assert result.returncode == 1
    assert f"cannot write the pid file {pid_file}" in result.stderr
    assert "daemon mode: logs to stderr will be discarded" in result.stderr


def test_second_start_refused_and_stale_pid_file_replaced(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    pid_file = tmp_path / "t.pid"
    pid_file.write_text("999999\n")  # left by a crashed run
    running = start_run(tunnel, tmp_path, certs, hello_backend, pid_file=str(pid_file))
    running.proc.wait_log(r"replacing a stale pid file .*t\.pid \(pid 999999 is not running\)")
    wait_for("the new pid file", lambda: pid_file.read_text() == f"{running.proc.pid}\n")

    other = write_config(
        tmp_path / "other.ini", certs, reserve_port(), hello_backend.port, pid_file=str(pid_file)
    )
    result = tunnel.run("run", "-c", str(other), timeout=30)
    assert result.returncode == 1
    assert f"already running (pid {running.proc.pid} holds the pid file" in result.stderr
    assert pid_file.read_text() == f"{running.proc.pid}\n"
    running.proc.stop()
    assert not pid_file.exists()


def proc_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_privileges_dropped_before_workers(
    tunnel: Launcher, public_dir: Path, public_certs: Certs, hello_backend: Backend
) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    certs = public_certs  # files nobody can read again on reload (or run refuses to start)
    running = start_run(tunnel, public_dir, certs, hello_backend, user="nobody", allow_root="no")
    running.proc.wait_log(rf"running as uid {nobody.pw_uid}, gid {nobody.pw_gid}")
    assert proc_ids(running.proc.pid) == (nobody.pw_uid, nobody.pw_gid)
    for worker in running.proc.worker_pids():
        assert proc_ids(worker) == (nobody.pw_uid, nobody.pw_gid)
    assert fetch(running.port, certs.ca_pem)[1].endswith(b"hello from the backend\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root check needs root")
def test_refuses_to_serve_as_root(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    config = write_config(
        tmp_path / "t.ini", certs, reserve_port(), hello_backend.port, allow_root="no"
    )
    result = tunnel.run("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert "[tunnel] user: refusing to serve as root" in result.stderr
    assert "allow_root = yes" in result.stderr


def test_unknown_user_is_a_config_error(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    config = write_config(
        tmp_path / "t.ini", certs, reserve_port(), hello_backend.port, user="no-such-user-x"
    )
    result = tunnel.run("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert "[tunnel] user: no such user 'no-such-user-x'" in result.stderr


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_notify(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, abstract: bool
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@tunnel-test-{os.getpid()}-{reserve_port()}" if abstract else str(tmp_path / "n.sock")
    sock.bind(b"\0" + name[1:].encode() if abstract else name)
    sock.settimeout(15)
    tunnel.env["NOTIFY_SOCKET"] = name
    with sock:
        running = start_run(tunnel, tmp_path, certs, hello_backend)
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready.splitlines()
        assert f"MAINPID={running.proc.pid}" in ready.splitlines()
        running.proc.signal(signal.SIGHUP)
        reloading = sock.recv(4096).decode().splitlines()
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1][15:]) > 0
        assert "READY=1" in sock.recv(4096).decode().splitlines()
        running.proc.signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode().splitlines()
        assert running.proc.wait(20) == 0


ACTIVATE = """
import os, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
if sock.fileno() == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(sock.fileno(), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "tunnel", "run", "-c", sys.argv[2]])
"""


def test_socket_activation(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    port = reserve_port()
    config = write_config(tmp_path / "t.ini", certs, port, hello_backend.port, workers="2")
    # Start the way systemd would: the socket is bound, and the process exec'd with it.
    script = tmp_path / "activate.py"
    script.write_text(ACTIVATE)
    proc = tunnel.start_command([sys.executable, str(script), str(port), str(config)])
    proc.wait_log(rf"socket activation: using the socket passed for 127\.0\.0\.1:{port} \(fd 3\)")
    proc.wait_log(r"tunnel started")
    for _ in range(4):
        assert fetch(port, certs.ca_pem)[1].endswith(b"hello from the backend\n")
