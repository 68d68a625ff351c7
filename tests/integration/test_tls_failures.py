"""TLS failures speak TLS: OpenSSL's alert reaches the client before the close.

Alert descriptions (RFC 8446 6.2): handshake_failure 40, protocol_version 70,
decode_error 50, bad_record_mac 20.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import warnings
from pathlib import Path

import pytest

from .harness import (
    ALERT,
    BackendFactory,
    BioClient,
    Certs,
    TunnelFactory,
    echo_handler,
    parse_records,
    read_until_closed,
    recv_exactly,
    refusing_address,
    s_client_renegotiate,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

FATAL = 2
HANDSHAKE_FAILURE = 40
PROTOCOL_VERSION = 70
DECODE_ERROR = 50


def assert_alert_then_close(sock: socket.socket, description: int) -> None:
    """The server's whole answer is one fatal plaintext alert, then a clean TCP close."""
    data, how = read_until_closed(sock)
    assert how == "eof", f"connection ended by {how} after {data!r}"
    records = parse_records(data)
    assert records, "no TLS record before the close"
    assert records[0][0] == ALERT, f"first record is not an alert: {data[:16].hex()}"
    assert records[0][1] == bytes([FATAL, description]), records[0][1].hex()


@pytest.fixture
def tunnel_addr(start_tunnel: TunnelFactory, start_backend: BackendFactory) -> tuple[str, int]:
    """A running tunnel in front of an echo backend."""
    return start_tunnel(start_backend(echo_handler).address).address


def test_malformed_client_hello(tunnel_addr: tuple[str, int]) -> None:
    """A handshake record whose ClientHello is garbage gets decode_error."""
    with socket.create_connection(tunnel_addr, timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04garb")
        assert_alert_then_close(sock, DECODE_ERROR)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_truncated_client_hello_then_fin(
    version: str, certs: Certs, tunnel_addr: tuple[str, int]
) -> None:
    """Half a ClientHello followed by FIN gets decode_error, not a silent close."""
    client = BioClient(certs.client_context(version), tunnel_addr)
    hello = client.client_hello()
    client.sock.sendall(hello[: len(hello) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    assert_alert_then_close(client.sock, DECODE_ERROR)
    client.close()


def test_old_protocol_versions_only(tunnel_addr: tuple[str, int]) -> None:
    """A client offering only TLS 1.0/1.1 gets protocol_version."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL build offer them at all
    client = BioClient(ctx, tunnel_addr, server_hostname=None)
    client.sock.sendall(client.client_hello())
    assert_alert_then_close(client.sock, PROTOCOL_VERSION)
    client.close()


def test_no_shared_cipher(certs: Certs, tunnel_addr: tuple[str, int]) -> None:
    """A TLS 1.2 client offering only non-ECDHE ciphers gets handshake_failure."""
    ctx = certs.client_context("1.2")
    ctx.set_ciphers("AES128-SHA:AES256-GCM-SHA384")
    client = BioClient(ctx, tunnel_addr)
    client.sock.sendall(client.client_hello())
    assert_alert_then_close(client.sock, HANDSHAKE_FAILURE)
    client.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_corrupted_record_gets_bad_record_mac(
    version: str, certs: Certs, tunnel_addr: tuple[str, int]
) -> None:
    """A flipped bit in an application-data record is answered with bad_record_mac."""
    client = BioClient(certs.client_context(version), tunnel_addr)
    client.handshake()
    client.send(b"ping")
    assert recv_exactly(client.recv, 4) == b"ping"  # also consumes TLS 1.3 tickets
    record = bytearray(client.encrypt(b"x" * 100))
    record[-1] ^= 0x01  # inside the AEAD tag
    client.sock.sendall(record)
    data, how = read_until_closed(client.sock)
    assert how == "eof", f"connection ended by {how}"
    records = parse_records(data)
    assert records, "nothing before the close"
    if version == "1.2":
        assert records[0][0] == ALERT  # TLS 1.3 hides the type inside the encryption
    client.incoming.write(data)
    with pytest.raises(ssl.SSLError) as info:
        client.obj.read(100)
    assert info.value.reason == "SSLV3_ALERT_BAD_RECORD_MAC", info.value
    client.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_client_renegotiation_refused(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory, tmp_path: Path
) -> None:
    """openssl s_client's renegotiation (TLS 1.2) is refused with no_renegotiation; the
    worker survives and serves the next client."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address)
    workers = tunnel.worker_pids()
    ca_file = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca_file))
    output = s_client_renegotiate(
        tunnel.port,
        ca_file,
        b"hello\n",
        lambda: wait_until(
            lambda: backend.wait_connections(1)[0].bytes_received == 6, what="data via s_client"
        ),
        reply=b"hello\n",  # the echo: it must not arrive during the renegotiation
    )
    assert "RENEGOTIATING" in output
    assert "no renegotiation" in output, output[-2000:]
    assert tunnel.worker_pids() == workers  # no worker died
    with tunnel.connect(certs.client_context("1.2")) as sock:
        sock.sendall(b"still serving")
        assert recv_exactly(sock.recv, 13) == b"still serving"
    assert "Traceback" not in tunnel.log()


def test_compression_is_off(certs: Certs, start_tunnel: TunnelFactory) -> None:
    """No TLS compression is negotiated."""
    tunnel = start_tunnel(refusing_address())  # the handshake precedes the connect
    with tunnel.connect(certs.client_context("1.2")) as sock:
        assert sock.compression() is None
