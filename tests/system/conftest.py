"""Helpers for running ``tunnel`` as a subprocess: processes, ports, certificates, backends.

Every process a test starts is registered with the ``tunnel`` fixture and stopped by its
PID at teardown (workers included, found through /proc). Readiness is always polled with
a deadline (a port that accepts, a log line that appears), never waited for by sleeping.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

SRC = Path(__file__).resolve().parents[2] / "src"
REPO = SRC.parent
DEADLINE = 15.0
POLL = 0.02


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1 (chosen by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``check`` until it returns true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL)


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def base_env(home: Path) -> dict[str, str]:
    """A subprocess environment with HOME at ``home`` and ``src`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PYTHON"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), or [] if it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Proc:
    """One started ``tunnel`` process with its output in files."""

    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    known_children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        """Everything written to stderr (the log) so far."""
        return self.err_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = DEADLINE, start: int = 0) -> re.Match[str]:
        """Wait for a regex to appear in stderr (from offset ``start``); return the match."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            if self.popen.poll() is not None and not re.search(pattern, self.stderr()[start:]):
                pytest.fail(f"tunnel exited ({self.popen.returncode}):\n{self.stderr()}")
            match = re.search(pattern, self.stderr()[start:])
            if match:
                found.append(match)
            return bool(match)

        wait_for(f"log line {pattern!r}", check, timeout)
        return found[0]

    def worker_pids(self) -> list[int]:
        """Current worker processes (children of the supervisor)."""
        pids = children_of(self.pid)
        self.known_children.update(pids)
        return pids

    def signal(self, signo: int) -> None:
        """Send ``signo`` to the supervisor."""
        self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for exit; return the exit code."""
        return self.popen.wait(timeout)

    def stop(self) -> None:
        """Stop the process and every worker it had, by PID."""
        self.worker_pids()
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGTERM)  # the second one: no drain
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid in self.known_children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Launcher:
    """Starts ``python -m tunnel ...`` processes and remembers them for teardown."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[Proc] = []

    def start(self, *args: str) -> Proc:
        """Start ``tunnel ARGS`` in the background, output to files."""
        return self.start_command([sys.executable, "-m", "tunnel", *args])

    def start_command(self, command: list[str]) -> Proc:
        """Start ``command`` (which runs Tunnel) in the background, output to files."""
        index = len(self.procs)
        out_path = self.workdir / f"tunnel-{index}.out"
        err_path = self.workdir / f"tunnel-{index}.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.workdir,
            )
        proc = Proc(popen, out_path, err_path)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``tunnel ARGS`` to completion and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "tunnel", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        """Stop every started process."""
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh HOME for the subprocesses."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def tunnel(tmp_path: Path, home: Path) -> Iterator[Launcher]:
    """Start and run ``tunnel``; everything started is stopped at teardown."""
    launcher = Launcher(tmp_path, base_env(home))
    try:
        yield launcher
    finally:
        launcher.stop_all()


@dataclass(frozen=True)
class Certs:
    """A test CA and a server certificate for localhost / 127.0.0.1 on disk."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    ca: trustme.CA


def write_certs(ca: trustme.CA, directory: Path, **issue: datetime.datetime) -> Certs:
    """Issue a server certificate and write CA, chain and key as PEM files."""
    leaf = ca.issue_cert("localhost", "127.0.0.1", **issue)
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert_pem.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_pem))
    key_pem.chmod(0o600)
    return Certs(ca_pem, cert_pem, key_pem, ca)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """One test CA for the session (generated, never committed)."""
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> Certs:
    """Server certificate files for this test."""
    return write_certs(ca, tmp_path / "certs")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may pass through, for tests that drop privileges (tmp_path
    is private to its owner); removed at teardown."""
    path = Path(tempfile.mkdtemp(prefix="tunnel-test-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def public_certs(ca: trustme.CA, public_dir: Path) -> Certs:
    """Certificate files that ``nobody`` can read: CA and chain 0644, the key 0640 and
    readable through nobody's group only."""
    certs = write_certs(ca, public_dir / "certs")
    (public_dir / "certs").chmod(0o755)
    for path in (certs.ca_pem, certs.cert_pem):
        path.chmod(0o644)
    os.chown(certs.key_pem, 0, pwd.getpwnam("nobody").pw_gid)
    certs.key_pem.chmod(0o640)
    return certs


def write_config(
    path: Path, certs: Certs, accept_port: int, backend_port: int, **tunnel: str
) -> Path:
    """A one-listener configuration file; ``tunnel`` items go into ``[tunnel]``."""
    settings = {"workers": "1", "log_level": "info", "drain_timeout": "20s", **tunnel}
    if os.geteuid() == 0:
        settings.setdefault("allow_root", "yes")  # tests may run as root (CI does)
    lines = ["[tunnel]", *(f"{k} = {v}" for k, v in settings.items()), ""]
    lines += [
        "[web]",
        f"accept = 127.0.0.1:{accept_port}",
        f"cert = {certs.cert_pem}",
        f"key = {certs.key_pem}",
        f"connect = 127.0.0.1:{backend_port}",
        "handshake_timeout = 5s",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------- backends


class Backend:
    """A plaintext TCP server in a thread; ``handler(conn)`` serves each connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.closing = False
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handler(conn)

    def close(self) -> None:
        """Stop accepting and wait briefly for handlers."""
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.accepter.join(5)
        for thread in self.threads:
            thread.join(5)


def read_request(conn: socket.socket) -> bytes:
    """Read an HTTP request head (up to the blank line)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def hello_handler(conn: socket.socket) -> None:
    """Answer one HTTP request with a short body and close."""
    read_request(conn)
    body = b"hello from the backend\n"
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


@pytest.fixture
def backend_factory() -> Iterator[Callable[[Callable[[socket.socket], None]], Backend]]:
    """Make backends with a given handler; all are closed at teardown."""
    made: list[Backend] = []

    def make(handler: Callable[[socket.socket], None]) -> Backend:
        backend = Backend(handler)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.close()


@pytest.fixture
def hello_backend(backend_factory: Callable[[Callable[[socket.socket], None]], Backend]) -> Backend:
    """A backend answering every request with 'hello from the backend'."""
    return backend_factory(hello_handler)


@dataclass
class Running:
    """A started ``tunnel run`` and what it fronts."""

    proc: Proc
    port: int
    certs: Certs
    config: Path


def start_run(
    tunnel: Launcher, tmp_path: Path, certs: Certs, backend: Backend, **settings: str
) -> Running:
    """Write a config, start ``tunnel run`` and wait until its port accepts."""
    port = free_port()
    config = write_config(tmp_path / "tunnel.ini", certs, port, backend.port, **settings)
    proc = tunnel.start("run", "-c", str(config))
    proc.wait_log(r"tunnel started")
    wait_for(f"port {port} to accept", lambda: port_accepts(port))
    return Running(proc, port, certs, config)
