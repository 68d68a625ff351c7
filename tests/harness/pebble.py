"""Pebble (a test ACME server) and pebble-challtestsrv (its DNS) on loopback, for ACME tests.

Pebble's own HTTPS uses a trustme certificate (``ca_file`` in [acme] trusts it). Its
validation connects to ``tls_port`` (TLS-ALPN-01) and ``http_port`` (HTTP-01) on the
address the DNS server gives for every name: 127.0.0.1. TCP ports are reserved
(:func:`harness.net.reserve_port`); the DNS server's UDP port cannot be (the server does
not share it), so the start is retried if it was taken in between. Every process is
stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .certs import Certs
from .net import reserve_port
from .waits import wait_until

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Pebble:
    """A running Pebble with its DNS server."""

    directory: Path
    certs: Certs
    tls_port: int
    http_port: int
    validity: int = 3600
    port: int = 0
    management: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ACME directory URL."""
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_file(self) -> str:
        """Trust for Pebble's own HTTPS."""
        return str(self.directory / "pebble-ca.pem")

    def log(self) -> str:
        return (self.directory / "pebble.log").read_text(errors="replace")

    def start(self, attempts: int = 3) -> None:
        """Start challtestsrv and Pebble; retry with new ports when one was taken."""
        for attempt in range(attempts):
            try:
                self._start_once()
                return
            except AssertionError:
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _start_once(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.certs.ca.cert_pem.write_to_path(self.ca_file)
        dns = _free_udp_port()
        with open(self.directory / "dns.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [
                        CHALLTESTSRV,
                        "-dns01",
                        f"127.0.0.1:{dns}",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-management",
                        f"127.0.0.1:{reserve_port()}",
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        self.port, self.management = reserve_port(), reserve_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(self.certs.cert_path),
                "privateKey": str(self.certs.key_path),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": self.validity,
            }
        }
        (self.directory / "pebble.json").write_text(json.dumps(config))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        with open(self.directory / "pebble.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [
                        PEBBLE,
                        "-config",
                        str(self.directory / "pebble.json"),
                        "-dnsserver",
                        f"127.0.0.1:{dns}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.directory,
                )
            )
        wait_until(self._ready, 10, 0.05, "pebble to serve its directory")

    def _ready(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"pebble exited:\n{self.log()}")
        try:
            self.get(self.url)
        except OSError:
            return False
        return True

    def get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(url, context=ctx, timeout=5) as response:
            return bytes(response.read())

    def roots(self) -> str:
        """The PEM of the root that signs Pebble's certificates (from the management API)."""
        return self.get(f"https://127.0.0.1:{self.management}/roots/0").decode()

    def stop(self) -> None:
        """Stop Pebble, then its DNS server."""
        while self.procs:
            _stop(self.procs.pop())


def served_certificate(port: int, name: str, ca_pem: str, timeout: float = 5.0) -> ssl.SSLSocket:
    """A TLS connection to ``port`` for ``name`` that verifies against ``ca_pem``."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=name)


def wait_log(read: object, text: str, timeout: float = 30.0) -> None:
    """Wait until ``text`` appears in what ``read()`` returns."""
    assert callable(read)
    start = time.monotonic()
    wait_until(lambda: text in read(), timeout, 0.05, f"{text!r} (waited since {start:.0f})")
