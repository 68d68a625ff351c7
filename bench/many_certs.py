"""Start-up time and memory with many certificates on one listener (SNI).

Usage: ``python bench/many_certs.py [--count 1000] [--rsa]``

Generates ``count`` leaf certificates (one CA, ECDSA P-256 by default) into a temporary
``cert_dir``, then measures

* in process: the time to build the listener's contexts (``build_contexts``) and the
  growth of this process's RSS;
* as ``tunnel run`` with one worker: the time from exec until a TLS handshake with the
  last certificate's name succeeds, and the RSS of the supervisor and of the worker.

Nothing is kept: the temporary directory is removed and the tunnel stopped by its PID.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def generate(directory: Path, count: int, use_rsa: bool) -> None:
    """Write ``count`` combined cert+key PEM files signed by one throwaway CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    pem = serialization.Encoding.PEM
    for i in range(count):
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            rsa.generate_private_key(65537, 2048)
            if use_rsa
            else ec.generate_private_key(ec.SECP256R1())
        )
        names = [x509.DNSName(f"site{i}.example.test"), x509.DNSName(f"*.site{i}.example.test")]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"site{i}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (directory / f"site{i:05d}.pem").write_bytes(cert.public_bytes(pem) + key_pem)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def handshake_ok(port: int, name: str) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as sock,
        ):
            der = sock.getpeercert(binary_form=True)
    except OSError:
        return False
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return name in san.value.get_values_for_type(x509.DNSName)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rsa", action="store_true", help="RSA 2048 instead of ECDSA P-256")
    args = parser.parse_args()

    from tunnel.config import load_config
    from tunnel.process.supervisor import build_contexts

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "certs.d"
        directory.mkdir()
        started = time.monotonic()
        generate(directory, args.count, args.rsa)
        print(f"generated {args.count} certificates in {time.monotonic() - started:.1f}s")
        port = free_port()
        config_path = Path(tmp) / "bench.ini"
        root = "allow_root = yes\n" if os.geteuid() == 0 else ""
        config_path.write_text(
            f"[tunnel]\nworkers = 1\nlog_level = warning\n{root}\n[bench]\n"
            f"accept = 127.0.0.1:{port}\ncert_dir = {directory}\nconnect = 127.0.0.1:9\n"
        )
        config = load_config(str(config_path))
        before = rss_kib()
        started = time.monotonic()
        build_contexts(config)
        elapsed = time.monotonic() - started
        print(
            f"in process: build_contexts {elapsed:.2f}s, RSS +{(rss_kib() - before) / 1024:.1f} MiB"
        )
        last = f"site{args.count - 1}.example.test"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunnel", "run", "-c", str(config_path)],
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        try:
            deadline = started + 300
            while not handshake_ok(port, last):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("tunnel did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            ready = time.monotonic() - started
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            worker_rss = sum(rss_kib(pid) for pid in workers)
            print(
                f"tunnel run: serving the last name after {ready:.2f}s; "
                f"RSS supervisor {rss_kib(proc.pid) / 1024:.1f} MiB, "
                f"worker {worker_rss / 1024:.1f} MiB"
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
