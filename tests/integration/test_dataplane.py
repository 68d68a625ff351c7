"""Which data plane serves a listener: the compiled one where it can, said in the log.

The compiled plane is the default where it was built (by ``pip install``);
``TUNNEL_DATAPLANE=python`` chooses the Python plane. CI runs the integration, system and
adversarial suites on both planes; these tests make sure the default run really exercised
the compiled plane instead of silently falling back, and that the other run is the Python
plane.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    echo_handler,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

FORCED_PYTHON = os.environ.get("TUNNEL_DATAPLANE", "").strip().lower() == "python"
# Said once by the supervisor, for every listener, when no listener can be compiled.
PYTHON_LINE = "data plane: python for every listener (TUNNEL_DATAPLANE=python)"


def test_the_compiled_plane_serves_a_plain_listener(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Fails when the extension is missing or refused (build it: pip install -e .)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address)
    expected = PYTHON_LINE if FORCED_PYTHON else "listener test: compiled data plane"
    wait_until(lambda: "data plane" in tunnel.log(), what="the data plane line")
    assert expected in tunnel.log()
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    wait_until(lambda: "reason=" in tunnel.log(), what="the summary line")


def test_mtls_listeners_are_compiled(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Client certificates (verify, allow-lists, CRLs) are checked by OpenSSL on the
    compiled plane; tests/integration/test_mtls.py runs them there."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, client_ca=str(certs.cert_path), verify="optional")
    wait_until(lambda: "data plane" in tunnel.log(), what="the data plane line")
    if not FORCED_PYTHON:
        assert "listener test: compiled data plane" in tunnel.log()


def test_passthrough_routes_are_compiled(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A listener with a passthrough route is compiled (fp_passthrough.c), and its other
    names are terminated there (test_passthrough runs passthrough itself on both planes)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        route="sni:pass.example=pass",
        extra={"backend:pass": {"connect": "127.0.0.1:9", "passthrough": "yes"}},
    )
    wait_until(lambda: "data plane" in tunnel.log(), what="the data plane line")
    if FORCED_PYTHON:
        assert PYTHON_LINE in tunnel.log()
    else:
        assert "listener test: compiled data plane" in tunnel.log()
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"pong")
        assert sock.recv(4) == b"pong"
    wait_until(lambda: "reason=" in tunnel.log(), what="the summary line")


def test_listener_policies_are_compiled(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory, tmp_path: Path
) -> None:
    """keylog_file, deny_ja4 and the per-IP rates no longer keep a listener on the Python
    plane (their own tests run on both: test_backend_tls, test_ja4_groups, test_rates)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        keylog_file=str(tmp_path / "keys.log"),
        deny_ja4="t13d1516h2_8daaf6152771_e5627efa2ab1",
        max_connection_rate_per_ip="100/s",
        max_handshake_rate_per_ip="100/s",
    )
    wait_until(lambda: "data plane" in tunnel.log(), what="the data plane line")
    if not FORCED_PYTHON:
        assert "listener test: compiled data plane" in tunnel.log()
    with tunnel.connect(certs.client_context()) as sock:
        sock.sendall(b"pong")
        assert sock.recv(4) == b"pong"
    assert "CLIENT_TRAFFIC_SECRET_0 " in (tmp_path / "keys.log").read_text()


def test_a_backend_named_by_host_name(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """``localhost`` is resolved without blocking the worker; every address is tried."""
    backend = start_backend(echo_handler)
    port = backend.address.rsplit(":", 1)[1]
    tunnel = start_tunnel(f"localhost:{port}")
    wait_until(lambda: "data plane" in tunnel.log(), what="the data plane line")
    if not FORCED_PYTHON:
        assert "listener test: compiled data plane" in tunnel.log()
    for _ in range(3):
        with tunnel.connect(certs.client_context()) as sock:
            sock.sendall(b"name")
            assert sock.recv(4) == b"name"
    wait_until(lambda: tunnel.log().count("reason=") >= 3, what="three summary lines")
    assert f"backend=localhost:{port}" in tunnel.log()


def test_a_backend_name_that_does_not_resolve(certs: Certs, start_tunnel: TunnelFactory) -> None:
    """The client gets a clean close; the reason names the address that failed."""
    tunnel = start_tunnel("no-such-host.invalid:80")
    with tunnel.connect(certs.client_context()) as sock:
        assert sock.recv(10) == b""  # close_notify, no data
    line = wait_until(
        lambda: next((ln for ln in tunnel.log().splitlines() if "reason=" in ln), None),
        what="the summary line",
    )
    assert 'reason="backend unreachable: no-such-host.invalid:80: ' in line
