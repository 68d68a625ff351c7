"""ticket_key_file: instances sharing it resume each other's sessions; rotation works.

This also guards the mechanism behind it (SSL_CTX_set_tlsext_ticket_key_evp_cb, in C
where tunnel._native._ticketkeys is built, else through ctypes): if it stopped working,
resumption across two processes would fail here, and resumption across processes with
*different* files would (wrongly) succeed. On either plane, the C callback serves where
it is built (the reload log line says which one did).
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest

from tunnel._native.tickets import extension

from .harness import BackendFactory, Certs, TunnelFactory, TunnelProcess, echo_handler, wait_until

pytestmark = pytest.mark.timeout(120)

# The tunnels under test import the same tunnel package as this process.
CALLBACK = "C callback" if extension() is not None else "ctypes callback"

VERSIONS = ["1.2", "1.3"]


def session_from(
    tunnel: TunnelProcess, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession, bool]:
    """One echo exchange (which also delivers TLS 1.3 tickets); the session and if resumed."""
    with (
        socket.create_connection(tunnel.address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock,
    ):
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        assert sock.session is not None
        return sock.session, sock.session_reused


def key_file(path: Path, *keys: bytes) -> Path:
    """Replace ``path`` atomically with ``keys`` (80 bytes each)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(keys))
    os.replace(tmp, path)
    return path


@pytest.mark.parametrize("version", VERSIONS)
def test_two_instances_sharing_the_file_resume_each_other(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    backend = start_backend(echo_handler)
    shared = key_file(tmp_path / "tickets.key", os.urandom(80))
    other = key_file(tmp_path / "other.key", os.urandom(80))
    first = start_tunnel(backend.address, ticket_key_file=str(shared))
    second = start_tunnel(backend.address, ticket_key_file=str(shared))
    third = start_tunnel(backend.address, ticket_key_file=str(other))
    ctx = certs.client_context(version)
    session, resumed = session_from(first, ctx)
    assert not resumed
    assert session_from(second, ctx, session)[1], "same ticket_key_file must resume"
    assert not session_from(third, ctx, session)[1], "another key file must not resume"


@pytest.mark.parametrize("version", VERSIONS)
def test_replacing_the_file_rotates_keys_without_restart(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    backend = start_backend(echo_handler)
    old, new = os.urandom(80), os.urandom(80)
    path = key_file(tmp_path / "tickets.key", old)
    tunnel = start_tunnel(backend.address, ticket_key_file=str(path), workers=2)
    ctx = certs.client_context(version)
    old_session, _ = session_from(tunnel, ctx)

    key_file(path, new, old)  # new key first, the old one still accepted
    wait_until(
        lambda: tunnel.log().count("ticket keys reloaded") >= 2,
        timeout=20,
        what="both workers reloading the ticket keys",
    )
    assert tunnel.log().count(CALLBACK) >= 2, "each worker says which callback it runs"
    renewed, resumed = session_from(tunnel, ctx, old_session)
    assert resumed, "a ticket of the previous key must resume during the overlap"
    new_session, _ = session_from(tunnel, ctx)

    key_file(path, new)  # the old key retired
    wait_until(
        lambda: tunnel.log().count("ticket keys reloaded") >= 4,
        timeout=20,
        what="both workers reloading again",
    )
    assert not session_from(tunnel, ctx, old_session)[1]
    assert session_from(tunnel, ctx, new_session)[1]
    assert session_from(tunnel, ctx, renewed)[1], "the ticket renewed with the new key resumes"


def test_a_broken_replacement_keeps_the_old_keys(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    path = key_file(tmp_path / "tickets.key", os.urandom(80))
    tunnel = start_tunnel(backend.address, ticket_key_file=str(path))
    ctx = certs.client_context("1.3")
    session, _ = session_from(tunnel, ctx)
    key_file(path, b"short")
    wait_until(lambda: "keeping the previous keys" in tunnel.log(), timeout=20, what="warning")
    assert session_from(tunnel, ctx, session)[1]
