"""TLS to backends (re-encryption), client mode (plaintext in, TLS out), keylog_file."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trustme

from .harness import (
    BackendFactory,
    Certs,
    TunnelFactory,
    expect_plane,
    pattern,
    recv_exactly,
    wait_until,
)
from .tls_backends import server_context, tls_echo, tls_failures, untrusted_ctx

pytestmark = pytest.mark.timeout(90)


def on_expected_plane(tunnel: Any) -> None:
    """On a compiled run, the TLS backend is reached from the compiled plane."""
    expect_plane(tunnel)


VERSIONS = ["1.2", "1.3"]


def echo_roundtrip(sock: socket.socket, size: int = 300_000) -> None:
    data = pattern(size, 7)
    sock.sendall(data)
    assert recv_exactly(sock.recv, size) == data


@pytest.mark.parametrize("version", VERSIONS)
def test_reencrypt_to_a_verified_backend_with_sni(
    version: str,
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    seen: list[dict[str, Any]] = []
    backend = start_backend(tls_echo(server_context(certs, version), seen))
    tunnel = start_tunnel(
        None,
        backend="secure",
        extra={
            "backend:secure": {
                "connect": backend.address,
                "tls": "yes",
                "ca": str(ca_file),
                "sni": "localhost",
            }
        },
    )
    on_expected_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        echo_roundtrip(sock)
        sock.unwrap()
    assert seen[0]["version"] == f"TLSv{version}"
    assert seen[0]["sni"] == ["localhost"]


def test_backend_certificate_is_verified_and_failover_goes_on(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    bad_ctx = untrusted_ctx(tmp_path)
    bad_seen: list[dict[str, Any]] = []
    good_seen: list[dict[str, Any]] = []
    bad = start_backend(tls_echo(bad_ctx, bad_seen))
    good = start_backend(tls_echo(server_context(certs, "1.3"), good_seen))
    tunnel = start_tunnel(
        None,
        backend="secure",
        extra={
            "backend:secure": {
                "connect": [bad.address, good.address],
                "tls": "yes",
                "ca": str(ca_file),
            }
        },
    )
    on_expected_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        echo_roundtrip(sock, 1000)
    assert good_seen and "version" in good_seen[0]
    wait_until(lambda: bad_seen, what="the first backend's handshake")
    assert "UNKNOWN_CA" in bad_seen[0]["error"].upper()  # our alert: its CA is not trusted


def test_a_backend_failing_verification_is_logged_and_counted_before_failover(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """The connection succeeds on the next address, yet the failed one is not hidden."""
    bad_ctx = untrusted_ctx(tmp_path)
    bad = start_backend(tls_echo(bad_ctx, []))
    good = start_backend(tls_echo(server_context(certs, "1.3"), []))
    tunnel = start_tunnel(
        None,
        backend="secure",
        tunnel={"admin": "127.0.0.1:0"},
        extra={
            "backend:secure": {
                "connect": [bad.address, good.address],
                "tls": "yes",
                "ca": str(ca_file),
            }
        },
    )
    on_expected_plane(tunnel)
    admin = tunnel.admin_port()  # admin says port 0
    with tunnel.connect(certs.client_context()) as sock:
        echo_roundtrip(sock, 1000)
        sock.unwrap()
    logged = wait_until(
        lambda: re.search(r"backend (\S+): TLS handshake failed: (.*)", tunnel.log()),
        what="the failed backend in the log",
    )
    assert logged.group(1) == str(bad.address)
    assert "unable to get local issuer certificate" in logged.group(2)
    assert "trying the next address" in logged.group(2)

    wait_until(
        lambda: tls_failures(admin, bad.address) == 1,
        timeout=20,
        interval=0.2,
        what="the failure counted",
    )


def test_client_certificate_to_the_backend(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    client_ca = trustme.CA()
    leaf = client_ca.issue_cert("tunnel.example", common_name="tunnel-client")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    seen: list[dict[str, Any]] = []
    backend = start_backend(tls_echo(server_context(certs, "1.3", client_ca), seen))
    section = {"connect": backend.address, "tls": "yes", "ca": str(ca_file)}
    tunnel = start_tunnel(
        None,
        backend="secure",
        extra={"backend:secure": section | {"cert": str(cert), "key": str(key)}},
    )
    on_expected_plane(tunnel)
    with tunnel.connect(certs.client_context()) as sock:
        echo_roundtrip(sock, 1000)
    subject = dict(x[0] for x in seen[0]["peer"]["subject"])
    assert subject["commonName"] == "tunnel-client"


@pytest.mark.parametrize("version", VERSIONS)
def test_client_mode_wraps_plaintext_in_tls(
    version: str,
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    seen: list[dict[str, Any]] = []
    backend = start_backend(tls_echo(server_context(certs, version), seen))
    tunnel = start_tunnel(
        None,
        cert=None,
        key=None,
        client="yes",
        backend="remote",
        extra={
            "backend:remote": {
                "connect": backend.address,
                "tls": "yes",
                "ca": str(ca_file),
                "keylog_file": str(tmp_path / "backend-keys.log"),
            }
        },
    )
    on_expected_plane(tunnel)  # the backend's key log too
    with socket.create_connection(tunnel.address, timeout=10) as sock:
        echo_roundtrip(sock)
        sock.shutdown(socket.SHUT_WR)  # half-close: passed on as close_notify
        assert sock.recv(10) == b""
    assert seen[0]["version"] == f"TLSv{version}"
    wait_until(lambda: tunnel.conn_lines(), what="log line")
    assert 'reason="done"' in tunnel.conn_lines()[0]
    keys = (tmp_path / "backend-keys.log").read_text()
    assert ("CLIENT_RANDOM " if version == "1.2" else "CLIENT_TRAFFIC_SECRET_0 ") in keys


def test_client_mode_backend_must_be_tls(
    start_tunnel: TunnelFactory, start_backend: BackendFactory, tmp_path: Path
) -> None:
    from tunnel.config import parse_config
    from tunnel.errors import ConfigErrors

    text = (
        "[backend:plain]\nconnect = 127.0.0.1:1\n\n"
        "[c]\naccept = 127.0.0.1:0\nclient = yes\nbackend = plain\n"
    )
    with pytest.raises(ConfigErrors, match="tls = yes"):
        parse_config(text, "x.ini")


KEYLOG_HEADER = "# TLS secrets log file, generated by OpenSSL / Python\n"  # CPython's
KEYLOG_LINE = re.compile(r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+$")


@pytest.mark.parametrize("version", VERSIONS)
def test_keylog_file(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    from .harness import echo_handler

    keylog = tmp_path / "keys.log"
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, keylog_file=str(keylog))
    assert "WARNING" in tunnel.log() and "keylog_file is on" in tunnel.log()
    expect_plane(tunnel)  # written by C on the compiled plane, by CPython on the other
    with tunnel.connect(certs.client_context(version)) as sock:
        echo_roundtrip(sock, 100)
    expected = (
        {"CLIENT_RANDOM"}
        if version == "1.2"
        else {
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0",
            "EXPORTER_SECRET",
        }
    )

    def secrets() -> list[str]:
        return [x for x in keylog.read_text().splitlines() if not x.startswith("#")]

    wait_until(lambda: {x.split()[0] for x in secrets()} >= expected, what="key log lines")
    lines = secrets()
    assert all(KEYLOG_LINE.match(line) for line in lines), lines
    assert {line.split()[0] for line in lines} == expected
    assert len(lines) == len(expected)  # one line per secret, none twice
    text = keylog.read_text()
    assert text.startswith(KEYLOG_HEADER) and text.count("#") == 1 and text.endswith("\n")
    assert keylog.stat().st_mode & 0o777 == 0o600  # not the umask's 0644


def test_a_backend_failing_every_connection_is_logged_once_and_counted_each_time(
    certs: Certs,
    ca_file: Path,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """One WARNING per backend address and 10 s, however many connections meet the fault
    (a log line per connection would let a bad backend flood the log); metrics count each."""
    bad_ctx = untrusted_ctx(tmp_path)
    bad = start_backend(tls_echo(bad_ctx, []))
    good = start_backend(tls_echo(server_context(certs, "1.3"), []))
    tunnel = start_tunnel(
        None,
        backend="secure",
        tunnel={"admin": "127.0.0.1:0"},
        extra={
            "backend:secure": {
                "connect": [bad.address, good.address],
                "tls": "yes",
                "ca": str(ca_file),
                "max_fails": "0",  # never taken out: every connection tries it first
            }
        },
    )
    on_expected_plane(tunnel)
    admin = tunnel.admin_port()
    rounds = 5
    for _ in range(rounds):
        with tunnel.connect(certs.client_context()) as sock:
            echo_roundtrip(sock, 100)
            sock.unwrap()

    wait_until(
        lambda: tls_failures(admin, bad.address) == rounds,
        timeout=20,
        interval=0.2,
        what="each counted",
    )
    wait_until(
        lambda: tunnel.log().count('reason="done"') >= rounds, what="every connection's summary"
    )
    warnings = re.findall(r"backend \S+: TLS handshake failed: .*", tunnel.log())
    assert len(warnings) == 1, warnings
    assert str(bad.address) in warnings[0]
