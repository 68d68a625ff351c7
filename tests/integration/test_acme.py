"""ACME against a real server (Pebble): issuance by TLS-ALPN-01 and HTTP-01, served by Tunnel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Certs, TunnelFactory, TunnelProcess, echo_handler, free_port, wait_until
from .pebble import Pebble, served_certificate

NAME = "example.test"


@pytest.fixture
def pebble(certs: Certs, tmp_path: Path) -> Iterator[Pebble]:
    """A Pebble whose validations go to free ports the test's tunnel then listens on."""
    server = Pebble(tmp_path / "pebble", certs, tls_port=free_port(), http_port=free_port())
    server.start()
    yield server
    server.stop()


def acme_tunnel(
    start_tunnel: TunnelFactory,
    backend: str,
    pebble: Pebble,
    state_dir: Path,
    *,
    challenge: str = "tls-alpn-01",
    **acme: Any,
) -> TunnelProcess:
    """A tunnel whose only certificate comes from Pebble, listening on Pebble's tls_port."""
    settings = {
        "directory": pebble.url,
        "ca_file": pebble.ca_file,
        "state_dir": str(state_dir),
        "challenge": challenge,
        "http_port": pebble.http_port,
    } | acme
    tunnel = start_tunnel(
        backend,
        cert=None,
        key=None,
        accept=f"127.0.0.1:{pebble.tls_port}",
        acme=NAME,
        extra={"acme": settings},
    )
    tunnel.port = pebble.tls_port
    return tunnel


def echo_through(tunnel: TunnelProcess, pebble: Pebble) -> None:
    """A client trusting only Pebble's root gets the obtained certificate and its echo."""
    with served_certificate(tunnel.port, NAME, pebble.roots()) as tls:
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"


@pytest.mark.parametrize("challenge", ["tls-alpn-01", "http-01"])
def test_issuance_then_served_without_restart(
    challenge: str, start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    state = tmp_path / "state"
    tunnel = acme_tunnel(start_tunnel, backend.address, pebble, state, challenge=challenge)
    supervisor = tunnel.pid
    wait_until(lambda: "reload: generation 2 serving" in tunnel.log(), 30, 0.05, "new cert")
    log = tunnel.log()
    assert "serving a self-signed placeholder" in log
    assert f"certificate for {NAME} obtained" in log
    echo_through(tunnel, pebble)
    assert tunnel.proc.poll() is None and tunnel.pid == supervisor  # no restart
    assert (state / "certs" / f"{NAME}.pem").stat().st_mode & 0o777 == 0o600
    assert (state / "account.json").stat().st_mode & 0o777 == 0o600
