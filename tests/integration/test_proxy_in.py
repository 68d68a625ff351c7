"""PROXY protocol from a load balancer: header before TLS, trusted sources, errors, HAProxy."""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

import pytest

from tunnel.wire import proxy_protocol as pp

from .harness import (
    BackendFactory,
    BioClient,
    Certs,
    ConnRecord,
    TunnelFactory,
    TunnelProcess,
    echo_handler,
    read_until_closed,
    wait_until,
)
from .peers import haproxy_sender, needs_haproxy

pytestmark = pytest.mark.timeout(60)

CLIENT = ("203.0.113.7", 5555)
SERVER = ("198.51.100.1", 443)
TRUSTED = "127.0.0.0/8, ::1/128"


def recorder(record: ConnRecord) -> None:
    """Record what arrives; answer b"pong" to the first bytes; half-close on EOF."""
    while b"ping" not in record.received:
        if not record.recv():
            break
    record.sock.sendall(b"pong")
    record.read_to_end()
    record.sock.shutdown(socket.SHUT_WR)


def exchange(client: BioClient) -> None:
    """Complete the handshake, ping, expect pong, close cleanly."""
    client.handshake()
    client.send(b"ping")
    assert client.recv() == b"pong"
    client.close_notify()
    assert client.recv_all() == b""
    client.close()


def backend_header(record: ConnRecord) -> pp.ProxyHeader:
    header, rest = pp.decode(bytes(record.received))
    assert rest == b"ping"
    return header


def summary(tunnel: TunnelProcess) -> str:
    return str(wait_until(tunnel.conn_lines, what="summary line")[0])


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_header_and_client_hello_in_one_segment(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """The header's address replaces the peer; the ClientHello after it is not lost."""
    backend = start_backend(recorder)
    tunnel = start_tunnel(
        backend.address, proxy_from=TRUSTED, proxy_protocol="v2", proxy_keep_tlvs="yes"
    )
    client = BioClient(certs.client_context(version), tunnel.address)
    header = pp.encode_v2(CLIENT, SERVER, [(0xEA, b"vpc-1"), (pp.PP2_TYPE_AUTHORITY, b"lb")])
    client.sock.sendall(header + client.client_hello())
    exchange(client)
    (record,) = backend.wait_connections(1)
    wait_until(record.done.is_set, what="backend done")
    sent = backend_header(record)
    assert (sent.src_addr, sent.src_port) == CLIENT
    assert (sent.dst_addr, sent.dst_port) == SERVER
    assert sent.tlv(0xEA) == b"vpc-1"  # kept from the balancer
    assert sent.tlv(pp.PP2_TYPE_AUTHORITY) == b"localhost"  # ours, the SNI
    line = summary(tunnel)
    assert "peer=203.0.113.7:5555 " in line and 'reason="done"' in line


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_byte_by_byte(
    kind: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Header and ClientHello one byte per send: the decoder and TLS get every byte."""
    backend = start_backend(recorder)
    tunnel = start_tunnel(backend.address, proxy_from=TRUSTED, proxy_protocol="v1")
    client = BioClient(certs.client_context(), tunnel.address)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = pp.encode_v1(CLIENT, SERVER) if kind == "v1" else pp.encode_v2(CLIENT, SERVER)
    for byte in header + client.client_hello():
        client.sock.sendall(bytes((byte,)))
    exchange(client)
    (record,) = backend.wait_connections(1)
    wait_until(record.done.is_set, what="backend done")
    assert bytes(record.received) == b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\nping"


def test_local_command_keeps_the_socket_address(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, proxy_from=TRUSTED)
    client = BioClient(certs.client_context(), tunnel.address)
    port = client.sock.getsockname()[1]
    client.sock.sendall(pp.encode_v2(None, None, command="LOCAL"))
    client.handshake()
    client.send(b"ping")
    assert client.recv() == b"ping"
    client.close_notify()
    assert client.recv_all() == b""
    client.close()
    assert f"peer=127.0.0.1:{port} " in summary(tunnel)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not PROXY at all
        b"\x16\x03\x01\x00\xa5\x01",  # a ClientHello without a header
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
        b"PROXY " + b"9" * 200,  # over-long v1 line
        pp.V2_SIGNATURE + b"\x21\x11\xff\xff",  # v2 length over the cap
    ],
)
def test_malformed_header_closes_with_a_log_line(
    garbage: bytes, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, proxy_from=TRUSTED)
    with tunnel.raw() as sock:
        port = sock.getsockname()[1]
        sock.sendall(garbage)
        _, how = read_until_closed(sock, timeout=10)
        assert how in ("eof", "reset")
    line = summary(tunnel)
    assert f"peer=127.0.0.1:{port} " in line and 'reason="proxy header error: ' in line
    assert backend.records == []
    assert tunnel.proc.poll() is None and len(tunnel.worker_pids()) == 1


def test_untrusted_source_is_refused(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, proxy_from="10.0.0.0/8")
    with tunnel.raw() as sock:
        port = sock.getsockname()[1]
        sock.sendall(pp.encode_v1(CLIENT, SERVER))
        _, how = read_until_closed(sock, timeout=10)
        assert how in ("eof", "reset")
    line = summary(tunnel)
    assert f"peer=127.0.0.1:{port} " in line and 'reason="proxy untrusted source"' in line
    assert backend.records == []


def test_header_timeout(start_tunnel: TunnelFactory, start_backend: BackendFactory) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, proxy_from=TRUSTED, proxy_timeout="300ms")
    with tunnel.raw() as sock:
        sock.sendall(pp.V2_SIGNATURE[:5])  # a header that never completes
        _, how = read_until_closed(sock, timeout=20)
        assert how in ("eof", "reset")
    assert 'reason="proxy header timeout"' in summary(tunnel)


def test_no_proxy_from_means_no_header(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Without proxy_from a PROXY header is not read: it is a TLS error."""
    tunnel = start_tunnel(start_backend(echo_handler).address)
    with tunnel.raw() as sock:
        sock.sendall(pp.encode_v1(CLIENT, SERVER))
        read_until_closed(sock, timeout=10)
    assert 'reason="handshake failed' in summary(tunnel)


@needs_haproxy
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_in_front(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
    tmp_path: Path,
) -> None:
    """HAProxy (send-proxy / send-proxy-v2) in front: Tunnel logs and forwards the client."""
    backend = start_backend(recorder)
    tunnel = start_tunnel(backend.address, proxy_from="127.0.0.1/32", proxy_protocol="v1")
    with haproxy_sender(tmp_path, [tunnel.address], version) as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        client_port = raw.getsockname()[1]
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"pong"
            with contextlib.suppress(ssl.SSLError, OSError):
                sock.unwrap()
        (record,) = backend.wait_connections(1)
        wait_until(lambda: record.received.endswith(b"ping"), what="ping")
        line = bytes(record.received).split(b"\r\n", 1)[0].decode()
        assert line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}"
        # (HAProxy also relayed the readiness probe: that is another summary line.)
        wait_until(
            lambda: any(f"peer=127.0.0.1:{client_port} " in x for x in tunnel.conn_lines()),
            what="the client's own address in a summary line",
        )


def test_per_ip_cap_counts_the_header_address(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """max_connections_per_ip with proxy_from: each client behind the balancer has its own
    count (before, every connection counted on the balancer's 127.0.0.1)."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, proxy_from=TRUSTED, max_connections_per_ip=1)

    def through_balancer(client_ip: str) -> BioClient | None:
        """A served connection, left open; None when Tunnel closed it instead."""
        client = BioClient(certs.client_context(), tunnel.address)
        header = pp.encode_v1((client_ip, 4000), SERVER)
        client.sock.sendall(header + client.client_hello())
        try:
            client.handshake()
            client.send(b"ping")
            assert client.recv() == b"ping"
        except (ssl.SSLError, OSError):
            client.close()
            return None
        return client

    first = through_balancer("203.0.113.5")
    assert first is not None
    other = through_balancer("203.0.113.6")  # another client behind the same balancer
    assert other is not None
    assert through_balancer("203.0.113.5") is None  # its one connection is open
    summary = "refused 1 connection(s) over the per-IP limits"
    wait_until(lambda: summary in tunnel.log(), what="the refusals' summary line")
    assert "from 203.0.113.5 (1)" in tunnel.log()
    assert not tunnel.conn_lines()  # no line per refusal (a flood would flood the log)
    first.close()
    # Once Tunnel saw it close, the client may connect again.
    wait_until(tunnel.conn_lines, what="the first connection's line")
    again = through_balancer("203.0.113.5")
    assert again is not None
    again.close()
    other.close()


def test_trust_goes_by_prefix_bits(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """127.0.0.0/9 trusts 127.0.0.1 but not 127.128.0.1 (a prefix that ends inside a byte)."""
    backend = start_backend(recorder)
    tunnel = start_tunnel(backend.address, proxy_from="127.0.0.0/9", proxy_protocol="v1")
    outside = socket.create_connection(
        tunnel.address, timeout=10, source_address=("127.128.0.1", 0)
    )
    with outside:
        outside.sendall(pp.encode_v1(CLIENT, SERVER))
        data, how = read_until_closed(outside, timeout=10)
        assert (data, how in ("eof", "reset")) == (b"", True)
    wait_until(
        lambda: any('reason="proxy untrusted source"' in x for x in tunnel.conn_lines()),
        what="the refusal's line",
    )
    client = BioClient(certs.client_context(), tunnel.address)
    client.sock.sendall(pp.encode_v1(CLIENT, SERVER) + client.client_hello())
    exchange(client)
    (record,) = backend.wait_connections(1)
    wait_until(record.done.is_set, what="backend done")
    assert bytes(record.received) == b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\nping"
