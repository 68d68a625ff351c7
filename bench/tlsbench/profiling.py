"""Helpers of bench/profile.py: perf report parsing and callgrind instruction counts."""

from __future__ import annotations

import glob
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .certs import CertFiles
from .procs import Managed, Registry, free_port, process_tree, wait_for_port
from .targets import TARGETS, Setup

CATEGORIES = ("kernel", "OpenSSL", "libc", "runtime", "other")


@dataclass(frozen=True)
class World:
    """What every measurement needs: the process registry, a temp dir, backend, certs."""

    registry: Registry
    tmp: Path
    backend_port: int
    certs: dict[str, CertFiles]

    def start(
        self, target: str, cert: str, prefix: str, wrap: list[str] | None = None
    ) -> tuple[Managed, int, Path]:
        """Start a fresh ``target`` (1 worker) on a free port: (process, port, workdir)."""
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))
        port = free_port()
        setup = Setup(workdir, port, self.backend_port, self.certs[cert], 1)
        launch = TARGETS[target].launch(setup)
        argv = [*(wrap or []), *launch.argv]
        managed = self.registry.start(target, argv, workdir / "log", env=launch.env)
        return managed, port, workdir


_PERF_LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S.*?)\s*$")


def parse_perf_dsos(report: str) -> dict[str, float]:
    """``perf report --sort dso --stdio`` text -> {dso: share of samples (0..1)}."""
    shares: dict[str, float] = {}
    for line in report.splitlines():
        if line.startswith("#"):
            continue
        match = _PERF_LINE.match(line)
        if match:
            dso = match.group(2)
            shares[dso] = shares.get(dso, 0.0) + float(match.group(1)) / 100
    return shares


def category(dso: str, target: str) -> str:
    """Which part of the stack a shared object belongs to."""
    if dso.startswith("[kernel") or dso in ("[vdso]", "[unknown]"):
        return "kernel" if dso.startswith("[kernel") else "other"
    if dso.startswith(("libcrypto", "libssl")):
        return "OpenSSL"
    if dso.startswith(("libc.so", "libc-", "ld-linux", "libm.so")):
        return "libc"
    if target == "tunnel":
        runtime = dso.startswith(("libpython", "python")) or ".cpython-" in dso
    else:
        runtime = dso.startswith((target, "libev", "libpcre", "liblua")) or dso == target
    return "runtime" if runtime else "other"


def categorize(shares: dict[str, float], target: str) -> dict[str, float]:
    """Sum the shares by :func:`category` (every category present, possibly 0)."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for dso, share in shares.items():
        out[category(dso, target)] += share
    return out


# ----------------------------------------------------------------------- callgrind
def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _resumed_connections(port: int, count: int, ctx: ssl.SSLContext) -> None:
    session = None
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        with raw, ctx.wrap_socket(raw, session=session) as tls:
            tls.sendall(b"GET /small HTTP/1.0\r\n\r\n")
            while tls.recv(65536):
                pass
            session = tls.session


def _keepalive_requests(port: int, count: int, ctx: ssl.SSLContext) -> None:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with raw, ctx.wrap_socket(raw) as tls:
        reader = tls.makefile("rb")
        for _ in range(count):
            tls.sendall(b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)


def _instructions(files: list[str]) -> tuple[int, dict[str, int]]:
    """Total instructions and a per-object split from callgrind output files."""
    total, by_object = 0, {}
    for name in files:
        text = subprocess.run(
            ["callgrind_annotate", "--inclusive=no", "--threshold=100", name],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        for line in text.splitlines():
            if line.rstrip().endswith("PROGRAM TOTALS"):
                total += int(line.split()[0].replace(",", ""))
                continue
            match = re.match(r"^\s*([0-9,]+) \(.*\)\s+.*\[(.+)\]\s*$", line)
            if match:
                count = int(match.group(1).replace(",", ""))
                obj = os.path.basename(match.group(2))
                by_object[obj] = by_object.get(obj, 0) + count
    return total, by_object


def callgrind_wrap(out: Path, extra: list[str] | None = None) -> list[str]:
    """The command prefix that runs a target under callgrind, counting only while the
    caller switches instrumentation on (``callgrind_control -i on``), one file per pid."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        *(extra or []),
    ]


def callgrind_per_op(world: World, target: str, test: str, count: int) -> str:
    """One line: user-space instructions per operation of ``target``'s serving process."""
    out = Path(tempfile.mkdtemp(prefix="cg-out-", dir=world.tmp)) / "callgrind.out"
    wrap = callgrind_wrap(out)
    managed, port, _workdir = world.start(target, "ecdsa", f"cg-{target}-", wrap)
    ctx = _client_context()
    run = _resumed_connections if test == "resume" else _keepalive_requests
    try:
        wait_for_port(managed, port, timeout=300)
        run(port, 20, ctx)  # warm-up, outside the count
        server = process_tree(managed.pid)[-1]  # the worker (Tunnel) or the only process
        subprocess.run(["callgrind_control", "-i", "on", str(server)], capture_output=True)
        run(port, count, ctx)
        subprocess.run(["callgrind_control", "-i", "off", str(server)], capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(server)], capture_output=True)
        deadline = time.monotonic() + 30
        while not glob.glob(f"{out}.{server}.*") and time.monotonic() < deadline:
            time.sleep(0.2)
        total, by_object = _instructions(glob.glob(f"{out}.{server}.*"))
    finally:
        world.registry.stop(managed)
    top = sorted(by_object.items(), key=lambda kv: -kv[1])[:5]
    split = ", ".join(f"{name} {n / count:,.0f}" for name, n in top)
    unit = "resumed connection" if test == "resume" else "keep-alive request"
    return f"{target}: {total / count:,.0f} instructions per {unit} ({split})"
