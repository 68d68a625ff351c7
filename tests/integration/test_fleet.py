"""A fleet on one machine: three Tunnels on 127.0.0.2/.3/.4 behind HAProxy (round robin,
``send-proxy-v2``), sharing one ``ticket_key_file``.

Shown here: reconnects resume their TLS session on a *different* instance; each backend
sees the original client address; rotating the key file (then reloading) loses no
resumption; and an instance being stopped turns ``/readyz`` unready while it still
accepts (``shutdown_delay``), so the balancer can take it out first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import (
    Backend,
    BackendFactory,
    Certs,
    ConnRecord,
    TunnelFactory,
    TunnelProcess,
    wait_until,
)
from .peers import haproxy_sender, needs_haproxy

pytestmark = [needs_haproxy, pytest.mark.timeout(180)]

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
RECONNECTS = 150


def loopback_aliases_work() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((HOSTS[-1], 0))
    except OSError:
        return False
    return True


def pong(record: ConnRecord) -> None:
    """Read the PROXY v1 line and "ping"; answer "pong"; close when the client does."""
    while b"ping" not in record.received:
        if not record.recv():
            return
    record.sock.sendall(b"pong")
    record.read_to_end()


@dataclass
class Fleet:
    """The running fleet: HAProxy's port, the instances and their backends."""

    port: int
    tunnels: list[TunnelProcess]
    backends: list[Backend]
    admin_ports: list[int]
    key_file: Path

    def instance_of(self, client_port: int) -> tuple[int, str]:
        """Which instance relayed the client with this source port, and the PROXY line."""
        needle = f" {client_port} "

        def find() -> tuple[int, str] | None:
            for index, backend in enumerate(self.backends):
                for record in list(backend.records):
                    line = bytes(record.received).split(b"\r\n", 1)[0].decode()
                    if line.startswith("PROXY ") and needle in line:
                        return index, line
            return None

        found: tuple[int, str] = wait_until(find, 10, what=f"client port {client_port}")
        return found

    def reload_all(self, generation: int) -> None:
        """SIGHUP every instance and wait for its new generation, and for its old workers
        to be gone: until they have handled their SIGTERM they may still accept a
        connection (and answer it with the old ticket keys)."""
        drained = [t.log().count("finished draining") for t in self.tunnels]
        for tunnel in self.tunnels:
            tunnel.proc.send_signal(signal.SIGHUP)
        pattern = re.compile(rf"generation {generation} serving .*; (\d+) old worker")
        for tunnel, before in zip(self.tunnels, drained, strict=True):
            match = wait_until(
                lambda t=tunnel: pattern.search(t.log()), 20, what=f"generation {generation}"
            )
            old = int(match.group(1))
            wait_until(
                lambda t=tunnel, n=before + old: t.log().count("finished draining") >= n,
                20,
                what=f"the workers before generation {generation} gone",
            )


@pytest.fixture
def fleet(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory, tmp_path: Path
) -> Iterator[Fleet]:
    if not loopback_aliases_work():
        pytest.skip("127.0.0.2-4 cannot be bound here")
    key_file = tmp_path / "tickets.key"
    key_file.write_bytes(os.urandom(80))
    key_file.chmod(0o600)
    backends = [start_backend(pong) for _ in HOSTS]
    tunnels = [
        start_tunnel(
            backend.address,
            host=host,
            tunnel={"admin": f"{host}:0", "shutdown_delay": "2s"},
            ticket_key_file=str(key_file),
            proxy_from="127.0.0.0/8",
            proxy_protocol="v1",
        )
        for host, backend in zip(HOSTS, backends, strict=True)
    ]
    admin_ports = [tunnel.admin_port() for tunnel in tunnels]
    # HAProxy's own probe of its first server is not configured (no "check"): every
    # connection a backend sees is one of the test's.
    wait_until(
        lambda: all(ready(h, p) == 200 for h, p in zip(HOSTS, admin_ports, strict=True)),
        15,
        what="every instance ready",
    )
    with haproxy_sender(tmp_path, [t.address for t in tunnels]) as port:
        yield Fleet(port, tunnels, backends, admin_ports, key_file)


def ready(host: str, port: int) -> int:
    """The HTTP status of GET /readyz (0 if the endpoint does not answer)."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = sock.recv(200)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def visit(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSession, bool, int]:
    """One connection through HAProxy: ping/pong; return (session, resumed, client port)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    client_port = raw.getsockname()[1]
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"pong"
        resumed = sock.session_reused
        new_session = sock.session
    assert new_session is not None
    return new_session, resumed, client_port


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumption_across_instances(fleet: Fleet, certs: Certs, version: str) -> None:
    ctx = certs.client_context(version)
    session, resumed, client_port = visit(fleet.port, ctx, None)
    assert not resumed
    previous, line = fleet.instance_of(client_port)
    assert line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {fleet.port}"
    across = 0
    for _ in range(RECONNECTS):
        session, resumed, client_port = visit(fleet.port, ctx, session)
        instance, line = fleet.instance_of(client_port)
        # The backend sees the original client (HAProxy's PROXY v2 -> Tunnel -> v1).
        assert line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {fleet.port}"
        if resumed and instance != previous:
            across += 1
        previous = instance
    ratio = across / RECONNECTS
    print(f"TLS {version}: {across}/{RECONNECTS} reconnects resumed on another instance")
    assert ratio >= 0.99
    for backend in fleet.backends:
        assert len(backend.records) >= RECONNECTS // 3 - 1  # round robin used all three


def test_key_rotation_loses_no_resumption(fleet: Fleet, certs: Certs) -> None:
    ctx = certs.client_context("1.3")
    old_key = fleet.key_file.read_bytes()
    sessions = [visit(fleet.port, ctx, None)[0] for _ in range(12)]
    spare = sessions.pop()  # resumed only after the old key is gone: must fail then

    # Overlap: the new key first (it encrypts new tickets), the old one still accepted.
    new_key = os.urandom(80)
    replace(fleet.key_file, new_key + old_key)
    fleet.reload_all(2)
    renewed = []
    for session in sessions:
        fresh, resumed, _ = visit(fleet.port, ctx, session)
        assert resumed, "a session from before the rotation was not resumed"
        renewed.append(fresh)

    # The old key retired: tickets issued during the overlap (new key) still resume.
    replace(fleet.key_file, new_key)
    fleet.reload_all(3)
    assert all(visit(fleet.port, ctx, s)[1] for s in renewed)
    assert not any(visit(fleet.port, ctx, spare)[1] for _ in range(3))


def replace(path: Path, data: bytes) -> None:
    """Replace a file atomically (as a Secret update or a careful operator would)."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.rename(path)


def test_drained_instance_is_unready_before_it_stops_accepting(fleet: Fleet) -> None:
    tunnel, host, admin = fleet.tunnels[2], HOSTS[2], fleet.admin_ports[2]
    assert ready(host, admin) == 200
    tunnel.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: ready(host, admin) == 503, 10, what="/readyz 503")
    unready_at = time.monotonic()
    # Still accepting: the balancer has shutdown_delay (2s) to notice.
    with socket.create_connection(tunnel.address, timeout=2):
        pass
    assert "unready now; draining in 2s" in tunnel.log()

    def refused() -> bool:
        try:
            with socket.create_connection(tunnel.address, timeout=1):
                return False
        except OSError:
            return True

    wait_until(refused, 15, what="the drained instance to refuse")
    assert time.monotonic() - unready_at > 0.5
    assert tunnel.proc.wait(15) == 0
