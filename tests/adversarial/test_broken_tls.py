"""Broken TLS ends with the proper alert reaching the client, then a close; no plaintext
of a failed connection reaches the backend; normal clients are served meanwhile."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
from pathlib import Path

import pytest
from harness.backends import Backend
from harness.certs import Certs
from harness.clients import BioClient, s_client_renegotiate
from harness.net import ALERT, parse_records, read_until_closed, recv_exactly
from harness.tunnel import TunnelProcess
from harness.waits import wait_until

from .support import Guard, close_reason, tagged

pytestmark = pytest.mark.timeout(60)

FATAL = 2
DECODE_ERROR = 50
RECORD_OVERFLOW = 22


def assert_alert_then_close(sock: socket.socket, description: int) -> None:
    """One fatal plaintext alert, then a clean TCP close (FIN, not RST)."""
    data, how = read_until_closed(sock, timeout=10)
    assert how == "eof", f"connection ended by {how} after {data!r}"
    records = parse_records(data)
    assert records and records[0][0] == ALERT, f"no alert first: {data[:16].hex()}"
    assert records[0][1] == bytes([FATAL, description]), records[0][1].hex()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_truncated_client_hello_then_fin(
    version: str, certs: Certs, shared: TunnelProcess, guard: Guard
) -> None:
    since = len(shared.conn_lines())
    client = BioClient(certs.client_context(version), shared.address)
    hello = client.client_hello()
    client.sock.sendall(hello[: len(hello) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    assert_alert_then_close(client.sock, DECODE_ERROR)
    assert close_reason(shared, client.sock, since).startswith("client closed during handshake")
    client.close()
    guard.check()


@pytest.mark.parametrize("length", [16384 + 2048 + 1, 0xFFFF])
def test_oversized_record_length(
    length: int, certs: Certs, shared: TunnelProcess, guard: Guard
) -> None:
    """A ClientHello record claiming more than a record may hold: record_overflow."""
    client = BioClient(certs.client_context(), shared.address)
    hello = client.client_hello()
    client.sock.sendall(hello[:3] + struct.pack(">H", length) + hello[5:])
    assert_alert_then_close(client.sock, RECORD_OVERFLOW)
    client.close()
    guard.check()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_corrupted_ciphertext_gets_bad_record_mac(
    version: str, certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    """A flipped bit in a record: bad_record_mac, and its plaintext never reaches the backend."""
    tag = f"echo corrupt-{version}"
    client = BioClient(certs.client_context(version), shared.address)
    client.handshake()
    client.send(f"{tag}\nping".encode())
    assert recv_exactly(client.recv, 4) == b"ping"
    record = bytearray(client.encrypt(b"SECRET" * 20))
    record[-1] ^= 0x01  # inside the AEAD tag
    client.sock.sendall(record)
    data, how = read_until_closed(client.sock, timeout=10)
    assert how == "eof", f"connection ended by {how}"
    if version == "1.2":
        assert parse_records(data)[0][0] == ALERT  # TLS 1.3 hides the type
    client.incoming.write(data)
    with pytest.raises(ssl.SSLError) as info:
        client.obj.read(100)
    assert info.value.reason == "SSLV3_ALERT_BAD_RECORD_MAC", info.value
    client.close()
    seen = tagged(backend, tag)
    wait_until(seen.done.is_set, 10, what="backend connection released")
    assert b"SECRET" not in seen.received
    guard.check(extra_backend_conns=1)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_client_renegotiation_refused(
    certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard, tmp_path: Path
) -> None:
    """TLS 1.2 renegotiation by the client (openssl s_client 'R') is refused with the
    no_renegotiation alert; no worker dies."""
    workers = sorted(shared.worker_pids())
    ca_file = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca_file))
    output = s_client_renegotiate(
        shared.port, ca_file, b"echo reneg\n", lambda: tagged(backend, "echo reneg")
    )
    assert "RENEGOTIATING" in output
    assert "no renegotiation" in output, output[-2000:]
    assert sorted(shared.worker_pids()) == workers  # no worker died
    assert "Traceback" not in shared.log()
    guard.check(extra_backend_conns=1)
