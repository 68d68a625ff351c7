"""TLS configuration scan: ``testssl.sh`` against a tunnel with the default TLS settings.

The listener serves an ECDSA and an RSA certificate for the same names (so the suites of
both key types are scanned) and sets no TLS key at all: what is checked is the defaults
of :mod:`tunnel.tls.contexts` (Mozilla "intermediate"). The scan is restricted to the checks that
matter here (protocols, cipher categories, each cipher, forward secrecy, server
preference, vulnerabilities, renegotiation) and takes about half a minute; its JSON
findings are parsed and asserted on, and a summary is printed.

BREACH is not asserted: it is about HTTP *compression* of secrets in response bodies,
which is the backend's business (Tunnel relays bytes and compresses nothing; TLS-level
compression, CRIME, is asserted off). Deselect this test locally with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trustme
from harness.backends import BackendFactory, ConnRecord
from harness.certs import Certs
from harness.tunnel import TunnelFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("testssl") is None, reason="needs testssl (testssl.sh)"),
]

SCAN_TIMEOUT = 240  # seconds; a scan takes ~30 s on an idle 2-core machine
CHECKS = ["--protocols", "--std", "--each-cipher", "--fs", "--server-preference"]
CHECKS += ["--vulnerable", "--renegotiation"]

NOT_OFFERED = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "NPN"]
NOT_OFFERED += ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW"]
NOT_OFFERED += ["cipherlist_3DES_IDEA", "cipherlist_AVERAGE"]  # AVERAGE: the CBC suites
OFFERED = ["TLS1_2", "TLS1_3", "cipherlist_STRONG", "PFS"]
VULNERABILITIES = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego"]
VULNERABILITIES += ["secure_client_renego", "CRIME_TLS", "POODLE_SSL", "fallback_SCSV"]
VULNERABILITIES += ["SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4"]
NOT_ASSERTED = {"BREACH"}  # see the module docstring
SECURE_CURVES = {"X25519", "X448", "prime256v1", "secp384r1", "secp521r1"}
AEAD = {"AESGCM", "ChaCha20"}
# testssl's own environment notes (no GOST engine in Debian's OpenSSL 3), not findings.
HARMLESS_WARNINGS = {"engine_problem"}


def http_handler(record: ConnRecord) -> None:
    """Answer one small HTTP response (testssl probes the service with a GET)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        part = record.recv(4096)
        if not part:
            break
        data += part
    record.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    record.sock.shutdown(socket.SHUT_WR)
    record.read_to_end(keep=False)


def _cert_files(certs: Certs, directory: Path) -> list[str]:
    """An ECDSA and an RSA certificate (each file: key and chain) from the test CA."""
    paths = []
    for key_type in (trustme.KeyType.ECDSA, trustme.KeyType.RSA):
        issued = certs.ca.issue_cert("localhost", "127.0.0.1", key_type=key_type)
        path = directory / f"scan-{key_type.name.lower()}.pem"
        issued.private_key_and_cert_chain_pem.write_to_path(str(path))
        paths.append(str(path))
    return paths


def run_scan(port: int, json_path: Path) -> dict[str, dict[str, Any]]:
    """Run testssl against 127.0.0.1:``port``; its findings by id."""
    command = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "-n", "none"]
    command += ["--openssl", str(shutil.which("openssl") or "openssl")]
    command += [*CHECKS, "--jsonfile", str(json_path), f"127.0.0.1:{port}"]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SCAN_TIMEOUT,
        check=False,
    )
    assert json_path.exists(), result.stdout.decode(errors="replace")[-3000:]
    findings = json.loads(json_path.read_text())
    return {f["id"]: f for f in findings}


def summary(findings: dict[str, dict[str, Any]]) -> str:
    """The scan in a few lines (printed; the closing note of the issue quotes it)."""
    suites = [f["finding"].split()[1] for i, f in findings.items() if i.startswith("cipher_x")]
    lines = [f"{key}: {findings[key]['finding']}" for key in [*NOT_OFFERED, *OFFERED]]
    lines += [f"suites offered ({len(suites)}): {' '.join(suites)}"]
    lines += [f"curves: {findings['PFS_ECDHE_curves']['finding']}"]
    lines += [f"cipher order: {findings['cipher_order']['finding']}"]
    lines += [f"{key}: {findings[key]['finding']}" for key in VULNERABILITIES]
    return "\n".join(lines)


def test_default_tls_settings_pass_testssl(
    certs: Certs, start_tunnel: TunnelFactory, tmp_path: Path
) -> None:
    backends = BackendFactory()
    try:
        backend = backends(http_handler)
        tunnel = start_tunnel(
            backend.address,
            cert=_cert_files(certs, tmp_path),
            key=None,
            handshake_timeout=None,  # the defaults, as a real deployment would have them
            connect_timeout=None,
            idle_timeout=None,
        )
        findings = run_scan(tunnel.port, tmp_path / "scan.json")
    finally:
        backends.close_all()
    print("\ntestssl scan of the default TLS settings:\n" + summary(findings))

    for key in NOT_OFFERED:
        assert findings[key]["finding"].startswith("not offered"), findings[key]
    for key in OFFERED:
        assert findings[key]["finding"].startswith("offered"), findings[key]
    assert findings["cipher_order"]["finding"] == "server", findings["cipher_order"]
    curves = set(findings["PFS_ECDHE_curves"]["finding"].split())
    assert curves and curves <= SECURE_CURVES, curves

    # Every suite the server accepts: ECDHE key exchange (forward secrecy) and AEAD.
    suites = {i: f["finding"].split() for i, f in findings.items() if i.startswith("cipher_x")}
    assert len(suites) >= 6, suites
    for hexcode, name, kx, _bits, encryption, *_ in suites.values():
        assert kx == "ECDH", (hexcode, name, kx)
        assert encryption in AEAD, (hexcode, name, encryption)
    fs_suites = set(findings["PFS_ciphers"]["finding"].split())
    assert {fields[1] for fields in suites.values()} <= fs_suites

    for key in VULNERABILITIES:
        assert findings[key]["severity"] == "OK", findings[key]
    assert findings["secure_client_renego"]["finding"] == "not vulnerable"
    flagged = {
        i: f
        for i, f in findings.items()
        if f["severity"] not in ("OK", "INFO") and i not in HARMLESS_WARNINGS | NOT_ASSERTED
    }
    assert not flagged, flagged
