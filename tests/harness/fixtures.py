"""The pytest fixtures of the harness.

A test folder's ``conftest.py`` imports the fixtures it uses from here (importing a fixture
into a conftest makes it available to that folder; nothing is copied). Two flavours of
``certs`` exist: :func:`session_certs` (one set for the whole session, for tests that only
read the files) and :func:`fresh_certs` (per test, from the session's CA, for tests that
rewrite certificate files under a running Tunnel).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from .backends import Backend, BackendFactory, SocketBackend, SocketHandler, hello_handler
from .certs import Certs, make_certs, write_certs
from .tunnel import Launcher, TunnelFactory, base_env


@pytest.fixture(scope="session", name="certs")
def session_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A trustme CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """One test CA for the session (generated, never committed)."""
    return trustme.CA()


@pytest.fixture(name="certs")
def fresh_certs(ca: trustme.CA, tmp_path: Path) -> Certs:
    """Server certificate files of this test (it may rewrite them)."""
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


@pytest.fixture
def start_tunnel(certs: Certs, tmp_path: Path) -> Iterator[TunnelFactory]:
    """Start ``tunnel run`` child processes; all are stopped by PID afterwards and their
    logs checked for crashes."""
    factory = TunnelFactory(certs, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
    factory.check_logs()


@pytest.fixture
def start_backend() -> Iterator[BackendFactory]:
    """Start plain backends in threads; all are closed afterwards."""
    factory = BackendFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A loopback address whose connects hang: a listener with backlog 0, already full."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=2)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        with pytest.raises(TimeoutError):  # the trick works on this kernel
            probe.connect(listener.getsockname())
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        probe.close()
        filler.close()
        listener.close()


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh HOME for the subprocesses, under a short path: Unix sockets made below it
    (the demo backend's) must fit in 108 bytes, which pytest-xdist's deeper tmp_path
    does not leave room for."""
    path = Path(tempfile.mkdtemp(prefix="tn-home-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tunnel(tmp_path: Path, home: Path) -> Iterator[Launcher]:
    """Start and run ``tunnel``; everything started is stopped at teardown."""
    launcher = Launcher(tmp_path, base_env(home))
    try:
        yield launcher
    finally:
        launcher.stop_all()
    launcher.check_logs()  # after a passing test only: a failure already says what broke


@pytest.fixture
def backend_factory(
    start_backend: BackendFactory,
) -> Callable[[SocketHandler], Backend]:
    """Make backends whose ``handler(conn)`` gets each connection's socket (closed after
    it returns); all are closed at teardown."""

    def make(handler: SocketHandler) -> Backend:
        backend = SocketBackend(handler)
        start_backend.backends.append(backend)  # closed with the others
        return backend

    return make


@pytest.fixture
def hello_backend(backend_factory: Callable[[SocketHandler], Backend]) -> Backend:
    """A backend answering every request with 'hello from the backend'."""
    return backend_factory(hello_handler)
