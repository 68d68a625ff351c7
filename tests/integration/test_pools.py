"""Backend pools against real servers that go down and come back, and a real DNS server.

Timings asserted are loose upper bounds (the machine is shared); the measured values are
printed (``-s``) for the record.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from harness.admin import get, scrape, value

from tunnel.cli.status import Reply, summarise

from .harness import Certs, TunnelFactory, wait_until
from .pool_peers import NamedServer, dns_server, who

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def servers() -> Iterator[list[NamedServer]]:
    made: list[NamedServer] = []
    yield made
    for server in made:
        server.stop()


def named(
    servers: list[NamedServer], name: str, host: str = "127.0.0.1", port: int = 0
) -> NamedServer:
    server = NamedServer(name, host, port)
    servers.append(server)
    return server


def test_failover_passive_backoff_and_recovery(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    a, b = named(servers, "a"), named(servers, "b")
    tunnel = start_tunnel(
        None,
        backend="pool",
        extra={"backend:pool": {"connect": f"{a.address}, {b.address}", "fail_backoff": "1s"}},
    )
    ctx = certs.client_context()
    assert who(tunnel, ctx) == "a"
    a.stop()
    started = time.monotonic()
    assert who(tunnel, ctx) == "b"  # a refused: failover within the same connection
    failover = time.monotonic() - started
    refusals = tunnel.log().count("Connection refused")
    assert [who(tunnel, ctx) for _ in range(5)] == ["b"] * 5
    assert tunnel.log().count("Connection refused") == refusals  # a skipped, not tried
    a.start()
    started = time.monotonic()
    wait_until(lambda: who(tunnel, ctx) == "a", 10, interval=0.05, what="a back in use")
    back = time.monotonic() - started
    print(f"  failover on refusal {failover * 1000:.1f} ms; a back in use after {back:.2f} s")
    assert back < 1.0 + 2.0  # the back-off (1s), plus slack
    assert "is down for 1s after 1 failure(s)" in tunnel.log()
    assert "is up again" in tunnel.log()


def test_round_robin_with_weights(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    a, b = named(servers, "a"), named(servers, "b")
    tunnel = start_tunnel(
        None,
        backend="pool",
        extra={
            "backend:pool": {
                "connect": f"{a.address} weight=3, {b.address}",
                "balance": "round-robin",
            }
        },
    )
    got = [who(tunnel, certs.client_context()) for _ in range(8)]
    assert Counter(got) == {"a": 6, "b": 2}, got


def test_least_connections(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    a, b = named(servers, "a"), named(servers, "b")
    a.hold = b.hold = True
    tunnel = start_tunnel(
        None,
        backend="pool",
        extra={
            "backend:pool": {"connect": f"{a.address}, {b.address}", "balance": "least-connections"}
        },
    )
    ctx = certs.client_context()
    held = []
    for _ in range(4):
        sock = tunnel.connect(ctx)
        held.append((sock, sock.recv(1).decode()))
    assert Counter(name for _, name in held) == {"a": 2, "b": 2}
    for sock, name in held:  # free b's two: the next two go to b
        if name == "b":
            sock.close()
    wait_until(lambda: len(tunnel.conn_lines()) >= 2, 10, what="b's two connections ended")
    nxt = []
    for _ in range(2):
        sock = tunnel.connect(ctx)
        held.append((sock, ""))
        nxt.append(sock.recv(1).decode())
    for sock, _ in held:
        sock.close()
    assert nxt == ["b", "b"]


def test_active_checks_metrics_status_and_readyz(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    a, b = named(servers, "a"), named(servers, "b")
    tunnel = start_tunnel(
        None,
        workers=2,
        backend="pool",
        tunnel={"admin": "127.0.0.1:0"},
        extra={
            "backend:pool": {
                "connect": f"{a.address}, {b.address}",
                "health_check": "tcp",
                "health_interval": "200ms",
            }
        },
    )
    admin = tunnel.admin_port()  # admin says port 0

    def up(server: NamedServer) -> float:
        return value(scrape(admin), "tunnel_backend_up", pool="pool", address=server.address)

    wait_until(lambda: up(a) == 1 and up(b) == 1, 10, what="both up")
    wait_until(lambda: get(admin, "/readyz")[0] == 200, 10, what="ready (both workers reporting)")
    a.stop()
    started = time.monotonic()
    wait_until(lambda: up(a) == 0, 10, interval=0.05, what="a seen down")
    detected = time.monotonic() - started
    assert who(tunnel, certs.client_context()) == "b"  # no connect attempt to a at all
    assert "Connection refused" not in "".join(tunnel.conn_lines())
    b.stop()
    wait_until(lambda: get(admin, "/readyz")[0] == 503, 10, interval=0.05, what="unready")
    assert "every backend of test is down" in get(admin, "/readyz")[1]
    status, text = get(admin, "/readyz")
    lines, warnings = summarise("x", Reply(status, text, get(admin, "/metrics")[1]), time.time())
    assert any("backend [pool]: 0 of 2 address(es) up" in line for line in lines), lines
    assert len(warnings) >= 2
    a.start()
    started = time.monotonic()
    wait_until(lambda: get(admin, "/readyz")[0] == 200, 10, interval=0.05, what="ready again")
    recovered = time.monotonic() - started
    print(
        f"  active tcp checks every 200 ms: down seen in {detected:.2f} s, up in {recovered:.2f} s"
    )
    assert detected < 3.0 and recovered < 3.0
    assert who(tunnel, certs.client_context()) == "a"


def test_names_follow_their_ttl(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    one = named(servers, "one", "127.0.0.1")
    named(servers, "two", "127.0.0.2", one.port)  # the same port on another address
    with dns_server() as dns:
        dns.set("app.test", "A", 1, "127.0.0.1")
        tunnel = start_tunnel(
            None,
            backend="pool",
            tunnel={"resolvers": f"127.0.0.1:{dns.port}"},
            extra={"backend:pool": {"connect": f"app.test:{one.port}"}},
        )
        ctx = certs.client_context()
        # The name is resolved when first needed (dnspython loads lazily), then kept for
        # its TTL: ten connects ask the DNS server once or twice, not ten times.
        got = [who(tunnel, ctx) for _ in range(10)]
        assert got == ["one"] * 10
        asked = dns.queries[("app.test", "A")]
        assert 1 <= asked <= 3, asked  # not once per connect (2 workers may each ask)
        dns.set("app.test", "A", 1, "127.0.0.2")
        started = time.monotonic()
        wait_until(lambda: who(tunnel, ctx) == "two", 10, interval=0.1, what="the new address")
        print(f"  TTL 1 s: new address in use after {time.monotonic() - started:.2f} s")


def test_srv_priority_weight_and_port(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    a, b, c = named(servers, "a"), named(servers, "b"), named(servers, "c")
    with dns_server() as dns:
        dns.set(
            "_app._tcp.example.test",
            "SRV",
            60,
            f"10 3 {a.port} host.example.test.",
            f"10 1 {b.port} host.example.test.",
            f"20 1 {c.port} host.example.test.",
        )
        dns.set("host.example.test", "A", 60, "127.0.0.1")
        tunnel = start_tunnel(
            None,
            backend="pool",
            tunnel={"resolvers": f"127.0.0.1:{dns.port}"},
            extra={
                "backend:pool": {"connect": "srv:_app._tcp.example.test", "balance": "round-robin"}
            },
        )
        ctx = certs.client_context()
        got = [who(tunnel, ctx) for _ in range(8)]
        assert Counter(got) == {"a": 6, "b": 2}, got  # priority 10 only, weights 3:1
        a.stop()
        b.stop()
        assert who(tunnel, ctx) == "c"  # priority 20: the failover


def test_tls_health_check_needs_a_handshake(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    """A server that accepts TCP but speaks no TLS fails a tls check (and passes tcp)."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert_path, certs.key_path)
    plain = named(servers, "plain")
    secure = NamedServer("secure", tls=server_ctx)
    servers.append(secure)
    tunnel = start_tunnel(
        None,
        backend="pool",
        tunnel={"admin": "127.0.0.1:0"},
        extra={
            "backend:pool": {
                "connect": f"{plain.address}, {secure.address}",
                "health_check": "tls",
                "health_interval": "200ms",
            }
        },
    )
    admin = tunnel.admin_port()  # admin says port 0

    def state() -> tuple[float, float]:
        samples = scrape(admin)
        return tuple(  # type: ignore[return-value]
            value(samples, "tunnel_backend_up", pool="pool", address=s.address)
            for s in (plain, secure)
        )

    wait_until(lambda: state() == (0, 1), 10, interval=0.1, what="plain down, secure up")


def test_a_timed_out_address_is_skipped_after_one_timeout(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer], unreachable: str
) -> None:
    b = named(servers, "b")
    tunnel = start_tunnel(
        None,
        backend="pool",
        extra={"backend:pool": {"connect": f"{unreachable}, {b.address}", "connect_timeout": "1s"}},
    )
    ctx = certs.client_context()
    started = time.monotonic()
    assert who(tunnel, ctx) == "b"
    first = time.monotonic() - started
    started = time.monotonic()
    assert [who(tunnel, ctx) for _ in range(3)] == ["b"] * 3
    next_three = time.monotonic() - started
    print(f"  failover on timeout {first:.2f} s (connect_timeout 1s); next 3: {next_three:.2f} s")
    assert first >= 1.0  # waited for the timeout once
    assert next_three < 1.0  # then skipped: never the timeout again
    assert "connect timed out" in tunnel.log()


def test_passthrough_backends_are_pools_too(
    certs: Certs, start_tunnel: TunnelFactory, servers: list[NamedServer]
) -> None:
    """A passthrough backend fails over and skips a dead address like a terminated one."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert_path, certs.key_path)
    dead = named(servers, "dead")
    dead.stop()
    secure = NamedServer("secure", tls=server_ctx)  # terminates the client's TLS itself
    servers.append(secure)
    tunnel = start_tunnel(
        secure.address,
        route="sni:localhost=pt",
        extra={
            "backend:pt": {"connect": f"{dead.address}, {secure.address}", "passthrough": "yes"}
        },
    )
    assert [who(tunnel, certs.client_context()) for _ in range(3)] == ["secure"] * 3
    wait_until(lambda: len(tunnel.conn_lines()) >= 3, 10, what="three lines")
    assert tunnel.log().count("Connection refused") == 1  # skipped after its one failure
    assert "is down for 10s after 1 failure(s)" in tunnel.log()
