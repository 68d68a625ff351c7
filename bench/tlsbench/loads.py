"""Load generators: wrk, openssl s_time / s_client, the idle-connection holder.

Each function drives one measurement against a port and returns raw numbers;
CPU/RSS sampling of the terminator is done by the caller.
"""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d bytes=%d duration_us=%d p99_us=%d errors=%d\\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""
SLACK = 30.0  # extra seconds any load tool may take beyond its nominal duration


@dataclass
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    p99_ms: float
    errors: int


def write_wrk_script(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(WRK_SCRIPT)
    return path


def run_wrk(url: str, connections: int, seconds: int, script: Path) -> WrkResult:
    argv = ["wrk", f"-c{connections}", "-t1", f"-d{seconds}s", "--timeout", "30s"]
    argv += ["-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + SLACK)
    match = re.search(
        r"BENCH requests=(\d+) bytes=(\d+) duration_us=(\d+) p99_us=(\d+) errors=(\d+)", out.stdout
    )
    if not match:
        raise RuntimeError(f"wrk gave no result: {(out.stdout + out.stderr).strip()[-300:]}")
    req, nbytes, dur_us, p99_us, errors = (int(g) for g in match.groups())
    return WrkResult(req, nbytes, dur_us / 1e6, p99_us / 1000, errors)


# ---------------------------------------------------------------- openssl s_time

MARKS = re.compile(r"^[*rt123]+$")


@dataclass
class STimeResult:
    connections: int
    reused: int
    seconds: float


def _parse_s_time(stdout: str) -> tuple[int, int]:
    """(connections, resumed connections) from s_time's output.

    s_time prints one character per connection: 'r' when the session was resumed.
    """
    marks = "".join(line for line in stdout.split() if MARKS.match(line))
    counts = re.findall(r"^(\d+) connections in [\d.]+s", stdout, re.MULTILINE)
    connections = int(counts[-1]) if counts else len(marks)
    return connections, marks.count("r")


def run_s_time(port: int, seconds: int, parallel: int, reuse: bool) -> STimeResult:
    """``parallel`` concurrent s_time clients; TLS 1.3 only.

    Full handshakes (-new) do no request. Resumption (-reuse) needs ``-www``: a TLS 1.3
    client only receives its session ticket after the handshake, when it reads data.
    """
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-tls1_3"]
    argv += ["-time", str(seconds)]
    argv += ["-reuse", "-www", "/small"] if reuse else ["-new"]
    start = time.monotonic()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(parallel)
    ]
    total = reused = 0
    try:
        for proc in procs:
            stdout, _ = proc.communicate(timeout=seconds + SLACK)
            connections, resumed = _parse_s_time(stdout)
            total += connections
            reused += resumed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return STimeResult(total, reused, time.monotonic() - start)


def check_resumption(port: int, workdir: Path) -> tuple[bool, str]:
    """Connect with s_client, save the session, reconnect with it: is it "Reused"?"""
    sess = workdir / "session.pem"
    request = "GET /small HTTP/1.0\r\nHost: localhost\r\n\r\n"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-ign_eof"]
    first = subprocess.run(
        [*base, "-sess_out", str(sess)], input=request, capture_output=True, text=True, timeout=15
    )
    if not sess.exists():
        return False, f"no session saved (rc={first.returncode})"
    second = subprocess.run(
        [*base, "-sess_in", str(sess)], input=request, capture_output=True, text=True, timeout=15
    )
    line = next((x for x in second.stdout.splitlines() if x.startswith(("Reused", "New,"))), "")
    return line.startswith("Reused"), line.strip() or f"rc={second.returncode}"


# ---------------------------------------------------------------- idle connections


class IdleClient:
    """A child process holding idle TLS connections (see idle_client.py)."""

    def __init__(self, port: int) -> None:
        script = Path(__file__).with_name("idle_client.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def open(self, total: int, timeout: float = 240.0) -> tuple[int, int]:
        """Grow to ``total`` held connections; return (held, failed)."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"open {total}\n")
        self.proc.stdin.flush()
        line = _readline_with_timeout(self.proc, timeout)
        match = re.match(r"opened ok=(\d+) failed=(\d+)", line)
        if not match:
            raise RuntimeError(f"idle client said {line!r}")
        return int(match.group(1)), int(match.group(2))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"idle client silent for {timeout:.0f}s")
    return proc.stdout.readline()


# ---------------------------------------------------------------- openssl speed

SPEED_ROWS = {
    "aes-128-gcm": ("evp", "AES-128-GCM", "MB/s (16 KiB blocks)"),
    "aes-256-gcm": ("evp", "AES-256-GCM", "MB/s (16 KiB blocks)"),
    "chacha20-poly1305": ("evp", "ChaCha20-Poly1305", "MB/s (16 KiB blocks)"),
    "ecdsap256": ("+F4", "ECDSA P-256 sign", "sign/s"),
    "rsa2048": ("+F2", "RSA-2048 sign", "sign/s"),
    "ecdhx25519": ("+F5", "X25519 ECDH", "ops/s"),
}


def openssl_speed(name: str) -> float:
    """One core's speed for one algorithm, via ``openssl speed -seconds 1 -mr``."""
    kind = SPEED_ROWS[name][0]
    argv = ["openssl", "speed", "-seconds", "1", "-mr"]
    argv += ["-bytes", "16384", "-evp", name] if kind == "evp" else [name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        fields = line.split(":")
        if kind == "evp" and fields[0] == "+F":
            return float(fields[-1]) / 1e6
        if fields[0] == kind:
            return float(fields[3])
    raise RuntimeError(f"openssl speed {name}: no result")
