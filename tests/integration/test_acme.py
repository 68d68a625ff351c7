"""ACME against a real server (Pebble): issuance by TLS-ALPN-01 and HTTP-01, served by Tunnel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    SRC,
    Certs,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    reserve_port,
    wait_until,
)
from .pebble import Pebble, served_certificate

NAME = "example.test"


@pytest.fixture
def pebble(certs: Certs, tmp_path: Path) -> Iterator[Pebble]:
    """A Pebble whose validations go to free ports the test's tunnel then listens on."""
    server = Pebble(tmp_path / "pebble", certs, tls_port=reserve_port(), http_port=reserve_port())
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
    accept_port: int | None = None,
    admin: int | None = None,
    **acme: Any,
) -> TunnelProcess:
    """A tunnel whose only certificate comes from Pebble, listening on Pebble's tls_port."""
    port = accept_port or pebble.tls_port
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
        accept=f"127.0.0.1:{port}",
        acme=NAME,
        extra={"acme": settings},
        tunnel={"admin": f"127.0.0.1:{admin}"} if admin else None,
    )
    tunnel.port = port
    return tunnel


def echo_through(tunnel: TunnelProcess, pebble: Pebble, roots: str | None = None) -> None:
    """A client trusting only Pebble's root gets the obtained certificate and its echo."""
    with served_certificate(tunnel.port, NAME, roots or pebble.roots()) as tls:
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"


@pytest.mark.parametrize("challenge", ["tls-alpn-01", "http-01"])
def test_issuance_then_served_without_restart(
    challenge: str, start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    state = tmp_path / "state"
    admin = reserve_port()
    tunnel = acme_tunnel(
        start_tunnel, backend.address, pebble, state, challenge=challenge, admin=admin
    )
    supervisor = tunnel.pid
    wait_until(lambda: "reload: generation 2 serving" in tunnel.log(), 30, 0.05, "new cert")
    log = tunnel.log()
    assert "serving a self-signed placeholder" in log
    assert f"certificate for {NAME} obtained" in log
    echo_through(tunnel, pebble)
    assert len(backend.records) == 1  # validation handshakes never reach the backend
    assert tunnel.proc.poll() is None and tunnel.pid == supervisor  # no restart
    assert (state / "certs" / f"{NAME}.pem").stat().st_mode & 0o777 == 0o600
    assert (state / "account.json").stat().st_mode & 0o777 == 0o600
    # Metrics and status: one successful order, the next one ~20 minutes before expiry.
    metrics = wait_until(lambda: acme_metrics(admin), 10, 0.05, "acme metrics")
    assert 'tunnel_acme_orders_total{result="ok"} 1.0' in metrics
    assert f'tunnel_acme_renewal_at_seconds{{names="{NAME}"}}' in metrics
    status = run_cli("status", "--admin", f"127.0.0.1:{admin}")
    assert "acme orders: failed 0, ok 1" in status.stdout
    assert f"acme {NAME}: next order" in status.stdout


def acme_metrics(port: int) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return text if 'tunnel_acme_orders_total{result="ok"} 1.0' in text else None


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunnel", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )


def test_check_says_which_names_are_managed(tmp_path: Path) -> None:
    config = tmp_path / "t.ini"
    config.write_text(
        "[acme]\ndirectory = https://ca.test/dir\nstate_dir = state\n"
        f"[web]\naccept = 127.0.0.1:{reserve_port()}\nacme = {NAME}, www.{NAME}\n"
        "connect = 127.0.0.1:8080\n"
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "acme: https://ca.test/dir; challenge tls-alpn-01" in result.stdout
    assert f"acme (managed) {NAME}, www.{NAME}: no certificate yet: a self-signed" in result.stdout
    assert "renew it" not in result.stderr  # the placeholder is not a file to renew


def served_serial(tunnel: TunnelProcess, pebble: Pebble, roots: str) -> int:
    """The serial number of the certificate the tunnel serves (verified against Pebble)."""
    from cryptography import x509

    with served_certificate(tunnel.port, NAME, roots) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


@pytest.fixture
def short_lived(certs: Certs, tmp_path: Path) -> Iterator[Pebble]:
    """A Pebble issuing certificates valid for 30 seconds."""
    server = Pebble(
        tmp_path / "pebble", certs, tls_port=reserve_port(), http_port=reserve_port(), validity=30
    )
    server.start()
    yield server
    server.stop()


def test_renewal_swaps_the_certificate_in(
    start_tunnel: TunnelFactory, start_backend: Any, short_lived: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    tunnel = acme_tunnel(
        start_tunnel, backend.address, short_lived, tmp_path / "state", renew_before="25s"
    )
    wait_until(lambda: "generation 2 serving" in tunnel.log(), 30, 0.05, "first certificate")
    roots = short_lived.roots()
    first = served_serial(tunnel, short_lived, roots)
    # Renewed 5 s after issuance (25 s before the end of a 30 s lifetime).
    wait_until(lambda: "generation 3 serving" in tunnel.log(), 30, 0.05, "renewal")
    assert tunnel.log().count(f"certificate for {NAME} obtained") == 2
    assert served_serial(tunnel, short_lived, roots) != first
    echo_through(tunnel, short_lived)


def test_a_failing_acme_server_keeps_the_old_certificate(
    start_tunnel: TunnelFactory, start_backend: Any, short_lived: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    tunnel = acme_tunnel(
        start_tunnel, backend.address, short_lived, tmp_path / "state", renew_before="25s"
    )
    wait_until(lambda: "generation 2 serving" in tunnel.log(), 30, 0.05, "first certificate")
    roots = short_lived.roots()
    first = served_serial(tunnel, short_lived, roots)
    short_lived.stop()
    wait_until(lambda: f"order for {NAME} failed" in tunnel.log(), 30, 0.05, "a failed renewal")
    assert "keeping the current certificate" in tunnel.log()
    assert served_serial(tunnel, short_lived, roots) == first
    assert "generation 3" not in tunnel.log()
    echo_through(tunnel, short_lived, roots)


def test_restart_with_existing_state_orders_nothing(
    start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    state = tmp_path / "state"
    first = acme_tunnel(start_tunnel, backend.address, pebble, state)
    wait_until(lambda: "generation 2 serving" in first.log(), 30, 0.05, "first certificate")
    roots = pebble.roots()
    serial = served_serial(first, pebble, roots)
    first.stop()
    second = acme_tunnel(start_tunnel, backend.address, pebble, state)
    wait_until(lambda: "renewal at" in second.log(), 10, 0.05, "the ACME process's first look")
    log = second.log()
    assert "placeholder" not in log and "ordering" not in log
    assert served_serial(second, pebble, roots) == serial


def test_a_fleet_sharing_state_dir_orders_once_and_both_serve(
    start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    # Pebble validates on instance one's port only; whichever instance takes the lock and
    # orders, instance one answers from the shared state_dir and the other picks it up.
    backend = start_backend(echo_handler)
    state = tmp_path / "state"
    one = acme_tunnel(start_tunnel, backend.address, pebble, state)
    two = acme_tunnel(start_tunnel, backend.address, pebble, state, accept_port=reserve_port())
    for tunnel in (one, two):
        wait_until(lambda t=tunnel: "generation 2 serving" in t.log(), 30, 0.05, "certificate")
    logs = one.log() + two.log()
    assert logs.count(f"acme: ordering a certificate for {NAME}") == 1
    roots = pebble.roots()
    assert served_serial(one, pebble, roots) == served_serial(two, pebble, roots)
    echo_through(two, pebble, roots)


def test_http01_responder_answers_only_the_challenge_path(
    start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    state = tmp_path / "state"
    tunnel = acme_tunnel(start_tunnel, backend.address, pebble, state, challenge="http-01")
    (state / "challenges" / "http").mkdir(parents=True, exist_ok=True)
    (state / "challenges" / "http" / "tok-1").write_text("tok-1.thumb")
    (state / "secret").write_text("not for the web")
    base = f"http://127.0.0.1:{pebble.http_port}"
    with urllib.request.urlopen(f"{base}/.well-known/acme-challenge/tok-1", timeout=5) as reply:
        assert reply.read() == b"tok-1.thumb"
    for path in ("/", "/.well-known/acme-challenge/nope", "/.well-known/acme-challenge/../secret"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=5)
        assert info.value.code == 404, path
    wait_until(lambda: "generation 2 serving" in tunnel.log(), 30, 0.05, "certificate")


def test_a_reload_that_adds_acme_starts_ordering(
    start_tunnel: TunnelFactory, start_backend: Any, pebble: Pebble, tmp_path: Path
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, accept=f"127.0.0.1:{pebble.tls_port}")
    tunnel.port = pebble.tls_port
    config = tmp_path / "tunnel0.ini"
    lines = [
        line for line in config.read_text().splitlines() if not line.startswith(("cert", "key"))
    ]
    lines.insert(lines.index("[test]") + 1, f"acme = {NAME}")
    config.write_text(
        "\n".join(lines)
        + f"\n[acme]\ndirectory = {pebble.url}\nca_file = {pebble.ca_file}\n"
        + f"state_dir = {tmp_path / 'state'}\n"
    )
    os.kill(tunnel.pid, signal.SIGHUP)
    wait_until(lambda: "generation 3 serving" in tunnel.log(), 30, 0.05, "the new certificate")
    echo_through(tunnel, pebble)


def test_run_refuses_an_http_port_in_use(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        config = tmp_path / "t.ini"
        config.write_text(
            "[tunnel]\nallow_root = yes\n"
            f"[acme]\ndirectory = https://ca.test/dir\nstate_dir = state\nchallenge = http-01\n"
            f"http_port = {port}\n"
            f"[web]\naccept = 127.0.0.1:{reserve_port()}\nacme = {NAME}\nconnect = 127.0.0.1:8080\n"
        )
        result = run_cli("run", "-c", str(config))
    assert result.returncode == 2
    assert f"[acme] http_port: cannot answer HTTP-01 challenges on port {port}" in result.stderr
