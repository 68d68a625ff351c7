"""The admin endpoint after real traffic: /metrics numbers, /healthz, /readyz while draining."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from harness.admin import get, scrape, value

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    echo_handler,
    pattern,
    read_until_closed,
    recv_exactly,
    refusing_address,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_metrics_match_the_traffic(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, workers=2, tunnel={"admin": "127.0.0.1:0"})
    admin = tunnel.admin_port()  # accept and admin say port 0
    sizes = [1, 20_000, 300_001]
    for size in sizes:
        with tunnel.connect(certs.client_context(version)) as sock:
            data = pattern(size, size)
            sock.sendall(data)
            assert recv_exactly(sock.recv, size) == data
            sock.unwrap()
    for _ in range(2):  # not TLS: a handshake failure each
        with tunnel.raw() as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            read_until_closed(sock)
    total = sum(sizes)

    def settled() -> dict[Any, float] | None:
        samples = scrape(admin)
        done = value(samples, "tunnel_connections_closed_total", listener="test", reason="done")
        failed = value(samples, "tunnel_handshakes_total", listener="test", result="not_tls")
        return samples if (done, failed) == (3, 2) else None

    samples = wait_until(settled, timeout=20, interval=0.2, what="metrics of the traffic")
    assert value(samples, "tunnel_connections_accepted_total", listener="test") == 5
    assert value(samples, "tunnel_connections_active", listener="test") == 0
    assert value(samples, "tunnel_handshakes_total", listener="test", result="ok") == 3
    assert value(samples, "tunnel_bytes_total", listener="test", direction="in") == total
    assert value(samples, "tunnel_bytes_total", listener="test", direction="out") == total
    count = value(samples, "tunnel_handshake_duration_seconds_count", listener="test")
    assert count == 3
    negotiated = {
        dict(labels)["version"]: n
        for (name, labels), n in samples.items()
        if name == "tunnel_tls_negotiated_total"
    }
    assert negotiated == {f"TLSv{version}": 3}
    assert value(samples, "tunnel_backend_connects_total", backend=backend.address) == 3
    assert value(samples, "tunnel_workers", state="reporting") == 2
    assert value(samples, "tunnel_handshake_failures_last_minute") >= 0
    cert = value(
        samples,
        "tunnel_certificate_not_after_seconds",
        listener="test",
        path=str(certs.cert_path),
    )
    assert cert > 1.7e9
    assert get(admin, "/healthz") == (200, "ok\n")
    assert get(admin, "/readyz") == (200, "ready\n")
    assert get(admin, "/nope")[0] == 404


def test_backend_failures_and_readyz_while_draining(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    dead = refusing_address()
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        [dead, backend.address],
        tunnel={"admin": "127.0.0.1:0", "drain_timeout": "20s"},
    )
    admin = tunnel.admin_port()  # accept and admin say port 0
    wait_until(lambda: get(admin, "/readyz")[0] == 200, timeout=10, what="ready")
    sock = tunnel.connect(certs.client_context())
    try:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        samples = wait_until(
            lambda: (
                (s := scrape(admin))
                and value(s, "tunnel_backend_connect_failures_total", backend=dead, kind="refused")
                and s
            ),
            timeout=10,
            what="a refused connect counted",
        )
        assert value(samples, "tunnel_backend_connects_total", backend=backend.address) == 1
        assert value(samples, "tunnel_connections_active", listener="test") == 1
        tunnel.proc.send_signal(signal.SIGTERM)  # drains: the open connection keeps it up
        _, text = wait_until(
            lambda: (r := get(admin, "/readyz"))[0] == 503 and r, timeout=10, what="503"
        )
        assert "draining" in text
        assert get(admin, "/healthz")[0] == 200
    finally:
        sock.close()
    tunnel.proc.wait(timeout=30)


def test_rejections_are_counted(
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """mTLS rejections and per-IP refusals reach /metrics (refusals are not 'accepted')."""
    client_ca = tmp_path / "client-ca.pem"
    certs.ca.cert_pem.write_to_path(str(client_ca))
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(
        backend.address,
        tunnel={"admin": "127.0.0.1:0"},
        client_ca=str(client_ca),
        verify="optional",
        max_connections_per_ip=1,
    )
    admin = tunnel.admin_port()  # accept and admin say port 0
    with tunnel.connect(certs.client_context()) as held:  # no certificate: allowed
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        for _ in range(2):  # over max_connections_per_ip: refused before TLS
            with tunnel.raw() as sock:
                assert read_until_closed(sock)[0] == b""
        held.unwrap()
    wait_until(
        lambda: (
            value(scrape(admin), "tunnel_connections_active", listener="test") == 0
            and value(scrape(admin), "tunnel_connections_accepted_total", listener="test") == 1
        ),
        timeout=20,
        what="the held connection closed",
    )
    stranger = trustme.CA().issue_cert("stranger.example")  # a CA the listener does not trust
    ctx = certs.client_context("1.2")
    stranger.configure_cert(ctx)
    with pytest.raises((ssl.SSLError, OSError)), tunnel.connect(ctx) as sock:
        sock.recv(1)

    def counted() -> dict[Any, float] | None:
        samples = scrape(admin)
        rejected = value(samples, "tunnel_clients_rejected_total", listener="test")
        return samples if rejected == 1 else None

    samples = wait_until(counted, timeout=20, interval=0.2, what="the rejection counted")
    assert value(samples, "tunnel_connections_refused_per_ip_total", listener="test") == 2
    assert value(samples, "tunnel_connections_accepted_total", listener="test") == 2
    result = value(samples, "tunnel_handshakes_total", listener="test", result="bad_client_cert")
    assert result == 1  # classified as a client certificate failure, not "other"


def test_sni_strict_refusals_are_unknown_sni(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A name sni_strict refuses is logged and counted as such, not as "callback failed"."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, sni_strict="yes", tunnel={"admin": "127.0.0.1:0"})
    admin = tunnel.admin_port()  # admin says port 0
    ctx = certs.client_context()
    ctx.check_hostname = False
    with tunnel.raw() as raw, pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        ctx.wrap_socket(raw, server_hostname="unknown.example.org")
    line = wait_until(lambda: next(iter(tunnel.conn_lines()), None), what="the log line")
    assert 'reason="handshake failed: unknown server name"' in line, line
    assert " sni=unknown.example.org " in line
    wait_until(
        lambda: (
            value(scrape(admin), "tunnel_handshakes_total", listener="test", result="unknown_sni")
            == 1
        ),
        timeout=20,
        interval=0.2,
        what="the refusal counted as unknown_sni",
    )


def test_connections_around_a_reload_are_counted(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """A connection that ends just before SIGHUP, and one the old generation finishes while
    it drains, are both counted: the old workers' reports are heard until they exit."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, tunnel={"admin": "127.0.0.1:0", "drain_timeout": "20s"})
    admin = tunnel.admin_port()
    wait_until(lambda: get(admin, "/readyz")[0] == 200, timeout=10, what="ready")
    with tunnel.connect(certs.client_context()) as sock:  # ends right before the reload
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
    draining = tunnel.connect(certs.client_context())  # ends while the old worker drains
    try:
        draining.sendall(b"b")
        assert draining.recv(1) == b"b"
        tunnel.proc.send_signal(signal.SIGHUP)
        tunnel.wait_log("generation 2 serving")
        draining.sendall(b"c")  # still served by the draining worker
        assert draining.recv(1) == b"c"
    finally:
        draining.close()

    def counted() -> bool:
        samples = scrape(admin)
        done = value(samples, "tunnel_connections_closed_total", listener="test", reason="done")
        closed = sum(
            n for (name, labels), n in samples.items() if name == "tunnel_connections_closed_total"
        )
        return value(samples, "tunnel_connections_accepted_total", listener="test") == 2 and (
            closed == 2 and done >= 1
        )

    wait_until(counted, timeout=20, interval=0.2, what="both connections counted")
