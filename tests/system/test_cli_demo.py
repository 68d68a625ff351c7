"""``tunnel demo``: a self-signed certificate, the built-in backend, and curl -k."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import Launcher, alive, port_accepts, reserve_port, wait_for

pytestmark = pytest.mark.timeout(60)


def curl_k(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """GET https://localhost:PORT/ without verification."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        [curl, "-sS", "-k", "--max-time", "10", *extra, f"https://localhost:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_demo_answers_curl(tunnel: Launcher, home: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    tunnel.env["XDG_STATE_HOME"] = str(state)
    port = reserve_port()
    proc = tunnel.start("demo", "--port", str(port))
    wait_for(f"demo port {port}", lambda: port_accepts(port))
    proc.wait_log(r"tunnel started")

    pem = state / "tunnel" / "demo.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert f"curl -k https://localhost:{port}/" in proc.stdout()
    backend_pid = int(proc.stdout().split("plain HTTP, pid ")[1].split(")")[0])

    for version, cipher in (("1.3", "TLS_AES_"), ("1.2", "ECDHE-ECDSA-")):
        result = curl_k(port, f"--tlsv{version}", "--tls-max", version)
        assert result.returncode == 0, result.stderr
        page = result.stdout
        assert f"TLSv{version}" in page and cipher in page
        assert "client address" in page and "127.0.0.1" in page
        assert "localhost" in page  # the SNI

    html = curl_k(port, "-H", "Accept: text/html")
    assert html.stdout.startswith("<!doctype html>")
    head = curl_k(port, "-I")
    assert head.stdout.startswith("HTTP/1.1 200 OK")

    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_for("the demo backend to stop", lambda: not alive(backend_pid))
    assert not (state / "tunnel" / "demo-backend.sock").exists()
    assert not (home / ".local").exists()


def test_demo_reuses_certificate_and_reports_busy_port(tunnel: Launcher, home: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = tunnel.run("demo", "--port", str(port), timeout=30)
    assert result.returncode == 2
    assert "--port" in result.stderr and "Traceback" not in result.stderr
    pem = home / ".local" / "state" / "tunnel" / "demo.pem"
    first = pem.read_bytes()
    assert tunnel.run("demo", "--port", "0", timeout=30).returncode == 2
    assert pem.read_bytes() == first
