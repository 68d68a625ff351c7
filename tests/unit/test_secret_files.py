"""Files that hold secrets are mode 0600: gen-cert's key, the listener and backend key logs."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunnel.config import Address, BackendConfig, ListenerConfig
from tunnel.tls.backend import build_backend_context
from tunnel.tls.contexts import build_server_context
from tunnel.tls.secret_files import ensure_private_file, write_private_file
from tunnel.tls.selfsigned import make_self_signed


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """A umask that would let every file be world readable unless Tunnel says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "key.pem"
    write_private_file(path, b"secret")
    assert (mode(path), mode(path.parent), path.read_bytes()) == (0o600, 0o700, b"secret")
    with pytest.raises(FileExistsError):
        write_private_file(path, b"other")
    path.chmod(0o644)
    write_private_file(path, b"other", force=True)
    assert (mode(path), path.read_bytes()) == (0o600, b"other")


def test_ensure_private_file_creates_and_narrows(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.log"
    ensure_private_file(str(fresh))
    assert mode(fresh) == 0o600 and fresh.read_bytes() == b""
    old = tmp_path / "old.log"
    old.write_bytes(b"kept\n")
    old.chmod(0o644)
    ensure_private_file(str(old))
    assert mode(old) == 0o600 and old.read_bytes() == b"kept\n"


def test_listener_keylog_file_is_private(tmp_path: Path) -> None:
    pem = tmp_path / "cert.pem"
    write_private_file(pem, make_self_signed(["localhost"]))
    keylog = tmp_path / "keys.log"
    listener = ListenerConfig(
        name="web",
        accept=(Address("tcp", host="127.0.0.1", port=1),),
        cert=(str(pem),),
        key=None,
        connect=(Address("tcp", host="127.0.0.1", port=2),),
        keylog_file=str(keylog),
    )
    ctx = build_server_context(listener)
    assert ctx.keylog_filename == str(keylog)
    assert mode(keylog) == 0o600


def test_backend_keylog_file_is_private(tmp_path: Path) -> None:
    keylog = tmp_path / "backend-keys.log"
    backend = BackendConfig(
        name="api",
        connect=(Address("tcp", host="127.0.0.1", port=2),),
        tls=True,
        keylog_file=str(keylog),
    )
    ctx = build_backend_context(backend)
    assert isinstance(ctx, ssl.SSLContext) and ctx.keylog_filename == str(keylog)
    assert mode(keylog) == 0o600


def test_acme_state_files_are_private(tmp_path: Path) -> None:
    from tunnel.tls.acme.store import write_private

    account = tmp_path / "state" / "account.json"
    write_private(str(account), b"{}")
    write_private(str(account), b"{ }")  # replaced atomically, still 0600
    assert (mode(account), mode(account.parent), account.read_bytes()) == (0o600, 0o700, b"{ }")
